"""Squared-error losses with finite targets: IPO and SPPO-hard."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from lit_align.losses.base import require
from lit_align.losses.margin import MarginLoss, PairInputs, PairTerms


class IPO(MarginLoss):
    """Identity Preference Optimisation (Azar et al. 2023, arXiv 2310.12036, Eq. 17).

    ``ℓ = (Δ̄ − 1/(2β))²`` (β is the paper's τ). ``normalize="mean"`` (default) uses per-token-mean
    log-ratios ``Δ̄ = ρ_w/|y_w| − ρ_l/|y_l|`` as TRL does ("confirmed with the authors");
    ``"sum"`` uses sequence log-ratios as OpenRLHF and torchtune do. Its own rewards are ``β·ρ``
    of the chosen normalisation (logged as ``ipo/rewards/*`` with ``"mean"``). With ``"sum"``
    ``target_margin`` (reward units) is ``β·Δ* = 1/2`` for every pair; with ``"mean"`` the target
    is on per-token means, not on the summed log-ratios of ``rewards/*``, so none is reported.
    With ``"mean"`` the f-divergence and LD-DPO modifiers are rejected (sequence-level notions).

    Args:
        beta: regularisation β (τ); the target log-ratio margin is ``1/(2β)``; > 0.
        normalize: ``"mean"`` (per-token log-ratios) or ``"sum"`` (sequence log-ratios).
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "(Δ̄ − 1/(2β))²"
    paper = "Azar et al. 2023, arXiv 2310.12036"

    def __init__(
        self, beta: float = 0.1, normalize: Literal["mean", "sum"] = "mean", **modifiers: Any
    ) -> None:
        super().__init__(beta, **modifiers)
        choices = ("mean", "sum")
        require(normalize in choices, "normalize", f"must be one of {choices}, got {normalize!r}")
        self.normalize = normalize
        self.length_normalized = normalize == "mean"
        if self.length_normalized:
            self.reject_modifiers(("divergence", "ld_alpha"), "normalize='mean' (use 'sum')")

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        losses = (rho_w - rho_l - 1 / (2 * self.beta)) ** 2
        target = None if self.length_normalized else torch.full_like(rho_w.detach(), 0.5)
        return PairTerms(losses, target_margin=target)


class SPPOHard(MarginLoss):
    """SPPO with hard labels (Wu et al. 2024, arXiv 2405.00675, Eq. 4.7 with hard
    probabilities; TRL ``sppo_hard``).

    ``ℓ = (ρ_w − 1/(2β))² + (ρ_l + 1/(2β))²``: each log-ratio regresses on its own target, the
    winner's win probability taken as 1 and the loser's as 0. ``target_margin`` is the implied
    reward margin ``β·(1/(2β) + 1/(2β)) = 1``.

    Constructor arguments: those of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "(ρ_w − 1/(2β))² + (ρ_l + 1/(2β))²"
    paper = "Wu et al. 2024, arXiv 2405.00675"

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        half = 1 / (2 * self.beta)
        losses = (rho_w - half) ** 2 + (rho_l + half) ** 2
        return PairTerms(losses, target_margin=torch.ones_like(rho_w.detach()))
