"""Losses with a term on each response's own log-ratio: NCA and the two APO anchors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses.margin import MarginLoss, PairInputs, PairTerms


class NCA(MarginLoss):
    """Noise Contrastive Alignment, pairwise form (Chen et al. 2024, arXiv 2402.05369;
    TRL ``nca_pair``).

    ``ℓ = −logσ(βρ_w) − ½·logσ(−βρ_w) − ½·logσ(−βρ_l)``: absolute rewards, so the chosen
    likelihood is pushed up rather than only the margin.

    Constructor arguments: those of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "−logσ(βρ_w) − ½·logσ(−βρ_w) − ½·logσ(−βρ_l)"
    paper = "Chen et al. 2024, arXiv 2402.05369"

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        x_w, x_l = self.beta * rho_w, self.beta * rho_l
        losses = -F.logsigmoid(x_w) - 0.5 * F.logsigmoid(-x_w) - 0.5 * F.logsigmoid(-x_l)
        return PairTerms(losses)


class APOZero(MarginLoss):
    """Anchored Preference Optimization, zero anchor (D'Oosterlinck et al. 2024,
    arXiv 2408.06266; TRL ``apo_zero``).

    ``ℓ = (1 − σ(βρ_w)) + σ(βρ_l)``: raise the chosen and lower the rejected likelihood, for data
    whose chosen responses are better than the model's outputs.

    Constructor arguments: those of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "1 − σ(βρ_w) + σ(βρ_l)"
    paper = "D'Oosterlinck et al. 2024, arXiv 2408.06266"

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        return PairTerms(1 - torch.sigmoid(self.beta * rho_w) + torch.sigmoid(self.beta * rho_l))


class APODown(MarginLoss):
    """Anchored Preference Optimization, down anchor (D'Oosterlinck et al. 2024,
    arXiv 2408.06266; TRL ``apo_down``).

    ``ℓ = σ(βρ_w) + 1 − σ(βΔ)``: lower the chosen likelihood while keeping the margin, for data
    whose chosen responses are worse than the model's outputs.

    Constructor arguments: those of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "σ(βρ_w) + 1 − σ(βΔ)"
    paper = "D'Oosterlinck et al. 2024, arXiv 2408.06266"

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        x_w = self.beta * rho_w
        return PairTerms(torch.sigmoid(x_w) + 1 - torch.sigmoid(x_w - self.beta * rho_l))
