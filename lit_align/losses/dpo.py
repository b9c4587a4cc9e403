"""DPO and the losses that apply DPO's (smoothed) sigmoid to another margin: Robust DPO, AOT."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses.base import require
from lit_align.losses.margin import MarginLoss, PairInputs, PairTerms


def smoothed_sigmoid_loss(x: Tensor, eps: float) -> Tensor:
    """``−(1−ε)·logσ(x) − ε·logσ(−x)``, elementwise."""
    return -(1 - eps) * F.logsigmoid(x) - eps * F.logsigmoid(-x)


def _check_smoothing(eps: float) -> None:
    require(0 <= eps < 0.5, "label_smoothing", f"must be in [0, 0.5), got {eps}")


class DPO(MarginLoss):
    """Direct Preference Optimization, optionally label-smoothed (cDPO).

    Rafailov et al. 2023, arXiv 2305.18290, Eq. 7: ``ℓ = −logσ(βΔ)`` with
    ``Δ = ρ_w − ρ_l``. cDPO (Mitchell 2023, "A note on DPO with noisy preferences", Eq. 3; TRL's
    ``label_smoothing``) assumes each label is flipped with probability ε:
    ``ℓ = −(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)``. At ``policy == reference`` the loss is exactly ``ln 2``.

    Args:
        beta: inverse temperature β; > 0.
        label_smoothing: label-flip probability ε, in ``[0, 0.5)``; 0 is plain DPO.
        **modifiers: ``divergence``, ``divergence_alpha``, ``ld_alpha``, ``wpo`` of
            :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "−(1−ε)·logσ(βΔ) − ε·logσ(−βΔ)"
    paper = "Rafailov et al. 2023, arXiv 2305.18290; ε: cDPO (Mitchell 2023)"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        _check_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        return PairTerms(smoothed_sigmoid_loss(self.beta * (rho_w - rho_l), self.label_smoothing))


class RobustDPO(MarginLoss):
    """Provably robust DPO (Chowdhury et al. 2024, arXiv 2403.00409; TRL ``robust``).

    ``ℓ = [−(1−ε)·logσ(βΔ) + ε·logσ(−βΔ)] / (1 − 2ε)``: an unbiased loss under labels flipped with
    probability ε. Unlike cDPO it is not bounded below (the ε term rewards shrinking ``Δ``).

    Args:
        beta: inverse temperature β; > 0.
        label_smoothing: label-flip probability ε, in ``[0, 0.5)``.
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "[−(1−ε)·logσ(βΔ) + ε·logσ(−βΔ)] / (1−2ε)"
    paper = "Chowdhury et al. 2024, arXiv 2403.00409"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        _check_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        x = self.beta * (rho_w - rho_l)
        eps = self.label_smoothing
        return PairTerms((-(1 - eps) * F.logsigmoid(x) + eps * F.logsigmoid(-x)) / (1 - 2 * eps))


class AOT(MarginLoss):
    """Distributional alignment via Optimal Transport on paired data (Melnyk et al. 2024,
    arXiv 2406.05882; TRL ``aot``, whose ``aot_pair`` sorts ``ρ_w`` and ``ρ_l`` instead).

    ``δ = sort(c − r) − sort(c_ref − r_ref)`` where ``sort`` orders the ``B`` values of the
    micro-batch ascending (the 1-D optimal-transport coupling between the policy's and the
    reference's margin distributions), then ``ℓ = −(1−ε)·logσ(βδ) − ε·logσ(−βδ)`` averaged over
    the sorted positions. The sort couples the pairs of a micro-batch, so the loss depends on how
    pairs are grouped: it is not invariant under gradient accumulation, and with ``B = 1`` it is
    DPO. The LD-DPO modifier applies (it changes the sums); ``divergence`` and ``wpo`` do not,
    because sorting separates policy from reference log-ratios and reorders pairs.

    Args:
        beta: inverse temperature β; > 0.
        label_smoothing: ε, in ``[0, 0.5)``.
        **modifiers: ``ld_alpha`` of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "−(1−ε)·logσ(βδ) − ε·logσ(−βδ), δ = sort(c − r) − sort(c_ref − r_ref) over the batch"
    paper = "Melnyk et al. 2024, arXiv 2406.05882"

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        _check_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing
        self.reject_modifiers(("divergence", "wpo"), "its sort breaks the pair structure")

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        c, r = inputs.policy.sum.chunk(2)  # (B,), (B,)
        c_ref, r_ref = inputs.reference.sum.chunk(2)
        delta = torch.sort(c - r).values - torch.sort(c_ref - r_ref).values  # (B,)
        return PairTerms(smoothed_sigmoid_loss(self.beta * delta, self.label_smoothing))
