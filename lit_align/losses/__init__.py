"""The loss catalogue: every class is selectable as ``--model.loss <ClassName>``."""

from lit_align.losses.base import LossConfigError, PreferenceLoss
from lit_align.losses.bnf import BNF
from lit_align.losses.dpo import AOT, DPO, RobustDPO
from lit_align.losses.sft import SFT
from lit_align.losses.spo import SPO

ALL_LOSSES: tuple[type[PreferenceLoss], ...] = (DPO, SPO, BNF, SFT, RobustDPO, AOT)

__all__ = [
    "ALL_LOSSES",
    "AOT",
    "BNF",
    "DPO",
    "SFT",
    "SPO",
    "LossConfigError",
    "PreferenceLoss",
    "RobustDPO",
]
