"""The loss catalogue: every class is selectable as ``--model.loss <ClassName>``.

Reference-based paired losses derive from :class:`~lit_align.losses.margin.MarginLoss` and share
its modifiers (``divergence``, ``ld_alpha``, ``wpo``). Capability flags are class attributes,
except where an instance changes them (``WeightedSum``, ``ld_alpha``): read them from the loss
object.
"""

from lit_align.losses.anchored import NCA, APODown, APOZero
from lit_align.losses.base import LossConfigError, PreferenceLoss
from lit_align.losses.bco import BCO, BCOPair
from lit_align.losses.bnf import BNF
from lit_align.losses.dpo import AOT, DPO, RobustDPO
from lit_align.losses.dpo_variants import DPOP, RDPO, SigmoidNorm
from lit_align.losses.ipo import IPO, SPPOHard
from lit_align.losses.kto import KTO
from lit_align.losses.margin_shapes import EXO, DiscoPOP, Hinge
from lit_align.losses.reference_free import CPO, ORPO, SimPO
from lit_align.losses.sft import SFT
from lit_align.losses.spo import SPO
from lit_align.losses.weighted_sum import WeightedSum

ALL_LOSSES: tuple[type[PreferenceLoss], ...] = (
    DPO,
    SPO,
    BNF,
    SFT,
    IPO,
    RobustDPO,
    Hinge,
    EXO,
    NCA,
    BCOPair,
    SPPOHard,
    APOZero,
    APODown,
    DiscoPOP,
    AOT,
    SigmoidNorm,
    DPOP,
    RDPO,
    SimPO,
    CPO,
    ORPO,
    KTO,
    BCO,
    WeightedSum,
)

__all__ = [
    "ALL_LOSSES",
    "AOT",
    "APODown",
    "APOZero",
    "BCO",
    "BCOPair",
    "BNF",
    "CPO",
    "DPO",
    "DPOP",
    "EXO",
    "IPO",
    "KTO",
    "NCA",
    "ORPO",
    "RDPO",
    "SFT",
    "SPO",
    "DiscoPOP",
    "Hinge",
    "LossConfigError",
    "PreferenceLoss",
    "RobustDPO",
    "SPPOHard",
    "SigmoidNorm",
    "SimPO",
    "WeightedSum",
]
