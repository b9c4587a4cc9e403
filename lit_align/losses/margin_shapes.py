"""Losses that replace DPO's sigmoid by another function of ``x = βΔ``: hinge, EXO, DiscoPOP."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses.base import require
from lit_align.losses.margin import MarginLoss, PairInputs, PairTerms


class Hinge(MarginLoss):
    """SLiC hinge loss (Zhao et al. 2023, arXiv 2305.10425) on DPO's log-ratios (TRL ``hinge``).

    ``ℓ = relu(1 − βΔ)``: zero once the margin reaches ``1/β``; ``1/β`` plays SLiC's δ.

    Constructor arguments: those of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "relu(1 − βΔ)"
    paper = "Zhao et al. 2023 (SLiC), arXiv 2305.10425"

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        return PairTerms(torch.relu(1 - self.beta * (rho_w - rho_l)))


class EXO(MarginLoss):
    """Efficient exact optimisation, pairwise form (Ji et al. 2024, arXiv 2402.00856, Eq. 16;
    TRL ``exo_pair``).

    The reverse KL from the model's preference distribution ``(σ(x), σ(−x))``, ``x = βΔ``, to the
    smoothed labels ``(1 − ε, ε)``:
    ``ℓ = σ(x)·(logσ(x) − log(1 − ε)) + σ(−x)·(logσ(−x) − log ε)``, zero at ``σ(x) = 1 − ε``.
    ``ε > 0`` is required (``log ε``).

    Args:
        beta: inverse temperature β; > 0.
        epsilon: label smoothing ε, in ``(0, 0.5)`` (TRL's default 1e-3).
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "σ(βΔ)·[logσ(βΔ) − log(1−ε)] + σ(−βΔ)·[logσ(−βΔ) − log ε]"
    paper = "Ji et al. 2024, arXiv 2402.00856"

    def __init__(self, beta: float = 0.1, epsilon: float = 1e-3, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        require(0 < epsilon < 0.5, "epsilon", f"must be in (0, 0.5), got {epsilon}")
        self.epsilon = epsilon

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        x = self.beta * (rho_w - rho_l)
        eps = self.epsilon
        win = torch.sigmoid(x) * (F.logsigmoid(x) - math.log(1 - eps))
        lose = torch.sigmoid(-x) * (F.logsigmoid(-x) - math.log(eps))
        return PairTerms(win + lose)


class DiscoPOP(MarginLoss):
    """DiscoPOP, the discovered log-ratio-modulated loss (Chris Lu et al. 2024,
    arXiv 2406.08414; TRL ``discopop``).

    With ``x = βΔ`` and ``m = σ(x/τ)``: ``ℓ = (1 − m)·(−logσ(x)) + m·e^{−x}``. Deviation for
    numerics: ``m·e^{−x}`` is computed as ``exp(logσ(x/τ) − x)``, which stays finite where the
    literal form gives ``0·∞`` for very negative ``x``.

    Args:
        beta: inverse temperature β; > 0.
        tau: temperature τ of the modulation; > 0.
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "(1−m)·(−logσ(βΔ)) + m·e^{−βΔ}, m = σ(βΔ/τ)"
    paper = "Lu et al. 2024, arXiv 2406.08414"

    def __init__(self, beta: float = 0.1, tau: float = 0.05, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        require(tau > 0, "tau", f"must be > 0, got {tau}")
        self.tau = tau

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        x = self.beta * (rho_w - rho_l)
        logistic = -(1 - torch.sigmoid(x / self.tau)) * F.logsigmoid(x)
        return PairTerms(logistic + torch.exp(F.logsigmoid(x / self.tau) - x))
