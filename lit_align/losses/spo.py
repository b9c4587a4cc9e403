"""SPO: a preference loss with a finite target margin."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses._common import MarginLoss, PairInputs, PairTerms, linear_below
from lit_align.losses.base import require
from lit_align.types import PreferenceBatch


def _spo_core(z: Tensor) -> tuple[Tensor, Tensor]:
    """``f(z) = −z·e^{−z}`` and ``f'(z) = (z − 1)·e^{−z}``."""
    e = torch.exp(-z)
    return -z * e, (z - 1) * e


class SPO(MarginLoss):
    """Stable Preference Optimization, as reconstructed by lit_align.

    Paper: Y. Tan, "A Stable and Principled Loss Function for Direct Language Model Alignment",
    arXiv 2508.07137, and the related submission "Stable Preference Optimization". DPO's
    ``−logσ(βΔ)`` is minimised only as ``Δ → ∞``. SPO targets the finite margin of the RLHF
    optimum ``π* ∝ π_ref·exp(r/β)``, i.e. ``β·Δ* = Δr`` (reward gap), through the core
    ``f(z) = −z·e^{−z}``: minimum ``−1/e`` at ``z = 1``, ``f'(z) = (z − 1)e^{−z}``, a gradient that
    vanishes exponentially for confident pairs and an exponentially strong push for ``z < 0``.

    The papers do not publish the map from log-probs to ``z`` nor the ``α`` term; this class fixes
    them (every choice below is lit_align's, not the authors'):

    * ``z = β·Δ / Δr`` with ``Δ = ρ_w − ρ_l``, so the loss is minimal exactly at ``Δ = Δr/β``.
    * ``Δr = score_chosen − score_rejected`` per pair when ``use_scores`` and the batch carries
      scores, else the constant ``target_reward_gap``. Pairs whose score gap is ``≤ 0`` (ties or
      scores that contradict the chosen/rejected labels) carry no usable finite target; they fall
      back to ``target_reward_gap`` (the pair still counts as a preference) rather than being
      masked, and ``spo/score_fallback`` reports their fraction.
    * ``ℓ = f(z) + α·softplus(β·ρ_l)``: the ``α`` term discourages a positive rejected log-ratio
      (probability mass moved onto the rejected response); ``α = 0`` by default.
    * Numerics: ``e^{−z}`` overflows for ``z ≲ −88`` in float32, so below ``z_min`` the loss is the
      tangent line ``f(z_min) + f'(z_min)(z − z_min)``: finite, and its gradient keeps pushing ``z``
      up with the slope reached at ``z_min``.

    ``target_margin`` is ``Δr`` in reward units (``β·Δ* = Δr``), comparable with the rewards
    ``β·ρ``. Metrics: ``spo/z_mean``, ``spo/target_gap_mean``, ``spo/score_fallback``.

    Args:
        beta: inverse temperature β; the target log-ratio margin is ``Δr/β``; > 0.
        alpha: weight α of the rejected-log-ratio penalty ``softplus(β·ρ_l)``; ≥ 0.
        target_reward_gap: ``Δr`` when scores are absent, unused or not positive; > 0.
        use_scores: take ``Δr`` from ``score_chosen − score_rejected`` when the batch has scores.
        z_min: below this ``z`` the core continues linearly; in ``[−50, 1)``.
        **modifiers: the modifiers of :class:`~lit_align.losses._common.MarginLoss`.
    """

    formula = "−z·e^{−z} + α·softplus(βρ_l), z = βΔ/Δr"
    paper = "Tan 2025, arXiv 2508.07137 (z and the α term: lit_align's choice)"

    def __init__(
        self,
        beta: float = 0.1,
        alpha: float = 0.0,
        target_reward_gap: float = 1.0,
        use_scores: bool = True,
        z_min: float = -10.0,
        **modifiers: Any,
    ) -> None:
        super().__init__(beta, **modifiers)
        require(alpha >= 0, "alpha", f"must be >= 0, got {alpha}")
        require(target_reward_gap > 0, "target_reward_gap", f"must be > 0, got {target_reward_gap}")
        require(-50 <= z_min < 1, "z_min", f"must be in [-50, 1), got {z_min}")
        self.alpha = alpha
        self.target_reward_gap = target_reward_gap
        self.use_scores = use_scores
        self.z_min = z_min

    def reward_gap(self, batch: PreferenceBatch, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(Δr, fallback)``: the ``(B,)`` positive reward gaps and where the constant was used."""
        constant = torch.full_like(like, self.target_reward_gap)  # (B,)
        if not self.use_scores or batch.score_chosen is None or batch.score_rejected is None:
            return constant, torch.ones_like(like, dtype=torch.bool)
        gap = (batch.score_chosen - batch.score_rejected).to(like)  # (B,)
        fallback = gap <= 0
        return torch.where(fallback, constant, gap), fallback

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        gap, fallback = self.reward_gap(inputs.batch, rho_w.detach())  # (B,), (B,)
        z = self.beta * (rho_w - rho_l) / gap  # (B,)
        losses = linear_below(_spo_core, z, self.z_min)
        if self.alpha > 0:
            losses = losses + self.alpha * F.softplus(self.beta * rho_l)
        metrics = {
            "spo/z_mean": z.detach().mean(),
            "spo/target_gap_mean": gap.mean(),
            "spo/score_fallback": fallback.float().mean(),
        }
        return PairTerms(losses, target_margin=gap, metrics=metrics)
