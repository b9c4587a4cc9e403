"""DPO with a modified margin: DPO-Positive, length-regularised DPO, length-normalised DPO."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from lit_align.losses.base import require
from lit_align.losses.margin import MarginLoss, PairInputs, PairTerms


class DPOP(MarginLoss):
    """DPO-Positive (Pal et al. 2024, "Smaug", arXiv 2402.13228).

    ``ℓ = −logσ(β·(Δ − λ·max(0, c_ref − c)))``: the margin is reduced whenever the policy's
    chosen log-prob falls below the reference's, countering likelihood displacement. ``c`` and
    ``c_ref`` are the (LD-DPO-modified, when asked) sequence log-probs, not divergence scores.

    Args:
        beta: inverse temperature β; > 0.
        lam: penalty weight λ (the paper uses 50); ≥ 0.
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "−logσ(β(Δ − λ·max(0, c_ref − c)))"
    paper = "Pal et al. 2024 (Smaug), arXiv 2402.13228"

    def __init__(self, beta: float = 0.1, lam: float = 50.0, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        require(lam >= 0, "lam", f"must be >= 0, got {lam}")
        self.lam = lam

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        c = inputs.policy.sum.chunk(2)[0]  # (B,)
        c_ref = inputs.reference.sum.chunk(2)[0]
        penalty = (c_ref - c).clamp(min=0)
        return PairTerms(-F.logsigmoid(self.beta * (rho_w - rho_l - self.lam * penalty)))


class RDPO(MarginLoss):
    """Length-regularised DPO (Park et al. 2024, arXiv 2403.19159).

    ``ℓ = −logσ(βΔ − α·(|y_w| − |y_l|))`` with response lengths in tokens: a longer chosen
    response must win by a larger margin, which counters the length exploitation of DPO.

    Args:
        beta: inverse temperature β; > 0.
        alpha: length penalty α per token of length difference; ≥ 0.
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "−logσ(βΔ − α(|y_w| − |y_l|))"
    paper = "Park et al. 2024, arXiv 2403.19159"

    def __init__(self, beta: float = 0.1, alpha: float = 0.01, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        require(alpha >= 0, "alpha", f"must be >= 0, got {alpha}")
        self.alpha = alpha

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        len_w, len_l = inputs.policy.count.chunk(2)  # (B,) each
        return PairTerms(-F.logsigmoid(self.beta * (rho_w - rho_l) - self.alpha * (len_w - len_l)))


class SigmoidNorm(MarginLoss):
    """DPO on per-token-mean log-ratios (TRL's ``sigmoid_norm``).

    ``ℓ = −logσ(β·(ρ_w/|y_w| − ρ_l/|y_l|))``; rewards are ``β·ρ/|y|`` accordingly. The f-divergence
    and LD-DPO modifiers are rejected: both are defined on sequence log-ratios.

    Args:
        beta: inverse temperature β (per-token log-ratios are small: larger β than DPO's); > 0.
        **modifiers: ``wpo`` of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "−logσ(β(ρ_w/|y_w| − ρ_l/|y_l|))"
    paper = "Lambert et al. 2024 (Tülu 3, length-normalised DPO), arXiv 2411.15124"

    length_normalized = True

    def __init__(self, beta: float = 0.1, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        self.reject_modifiers(("divergence", "ld_alpha"), "it uses per-token-mean log-ratios")

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        return PairTerms(-F.logsigmoid(self.beta * (rho_w - rho_l)))
