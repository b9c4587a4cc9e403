"""SPO: a preference loss with a finite target margin and a bounded gradient."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses._common import RunningMean, linear_below
from lit_align.losses.base import require
from lit_align.losses.margin import MarginLoss, PairInputs, PairTerms
from lit_align.types import PreferenceBatch


def _spo_core(z: Tensor) -> tuple[Tensor, Tensor]:
    """``f(z) = −z·e^{−z}`` and ``f'(z) = (z − 1)·e^{−z}``."""
    e = torch.exp(-z)
    return -z * e, (z - 1) * e


def spo_shape(z: Tensor) -> Tensor:
    """``g(z)``: ``f(z) = −z·e^{−z}`` for ``z ≥ 0``, its tangent ``−z`` at 0 below (see SPO)."""
    return linear_below(_spo_core, z, 0.0)


class SPO(MarginLoss):
    """Stable Preference Optimization, as reconstructed by lit_align.

    Paper: Y. Tan, "A Stable and Principled Loss Function for Direct Language Model Alignment",
    arXiv 2508.07137, and the related submission "Stable Preference Optimization". DPO's
    ``−logσ(βΔ)`` is minimised only as ``Δ → ∞``. SPO targets the finite margin of the RLHF
    optimum ``π* ∝ π_ref·exp(r/β)``, i.e. ``β·Δ* = Δr`` (reward gap), through the core
    ``f(z) = −z·e^{−z}`` (minimum ``−1/e`` at ``z = 1``, ``f'(z) = (z − 1)e^{−z}``), and claims
    to avoid DPO's large gradients. The map from log-probs to ``z``, the loss scale, the
    continuation below ``z = 0`` and the ``α`` term are not published; every choice below is
    lit_align's, not the authors':

    * ``z = β·Δ/Δr`` with ``Δ = ρ_w − ρ_l`` (summed log-ratios), and
      ``ℓ = (Δr/2)·g(z) + α·softplus(β·ρ_l)`` with ``g(z) = f(z)`` for ``z ≥ 0`` and
      ``g(z) = −z`` (the tangent of ``f`` at 0) for ``z < 0``. With α = 0 the minimum is exactly at
      ``Δ = Δr/β``; ``∂ℓ/∂Δ < 0`` below it, ``> 0`` above it, and it vanishes like ``z·e^{−z}``
      for confident pairs.
    * **Gradient bound.** ``∂ℓ/∂Δ = (β/2)·g'(z)`` — the factor ``Δr`` in front of ``g`` cancels
      the ``1/Δr`` of ``∂z/∂Δ``, so the bound does not depend on ``Δr`` however small. On
      ``z ≥ 0``, ``g'(z) = (z − 1)e^{−z} ∈ [−1, e^{−2}]``; on ``z < 0``, ``g' = −1``. Hence
      ``|∂ℓ/∂Δ| ≤ β/2`` for every input: DPO's gradient at ``Δ = 0`` and half DPO's supremum
      ``β`` (without the α term, whose gradient ``α·β·σ(βρ_l)`` acts on ``ρ_l`` alone and is
      ``≤ αβ``). At ``policy == reference`` both losses push with ``β/2`` per pair.
    * **Why the continuation.** ``f'`` grows like ``|z|·e^{|z|}`` below 0: an inverted pair
      (the policy prefers the rejected response more than the reference does, common on real
      data where summed log-ratios run to tens of nats) got ``10²–10⁵`` times DPO's gradient and
      dominated the batch. On ``z ≥ 0`` the core's steepest slope is its value at ``z = 0``;
      continuing with that tangent keeps ``g`` C¹ and convex there, never pushes an inverted
      pair harder than a pair at the start, and matches DPO's linear asymptote ``−βΔ`` (up to
      the factor 1/2): far-inverted pairs are treated as DPO treats them, not as outliers to
      fix at any cost.
    * **One scale for Δr.** With ``use_scores`` and scores in the batch, a pair's reward gap is
      ``Δr = target_reward_gap · (s_w − s_l) / m``, ``m`` the running mean of the positive score
      gaps seen in training (buffers, saved in checkpoints, summed over ranks; each training
      micro-batch updates ``m`` before using it, as BCO's baseline, so the loss is not exactly
      invariant under gradient accumulation while ``m`` settles; frozen in eval mode). Pairs
      without scores, with tied scores or with scores that contradict the labels get
      ``Δr = target_reward_gap``: the average scored pair's gap, so scored and unscored pairs
      share one scale and ``target_reward_gap`` means the same with or without scores. Their
      fractions are logged as ``spo/unscored``, ``spo/tied_scores``, ``spo/inverted_scores``;
      ``spo/score_fallback`` is the fraction that got the constant (also every scored pair
      before the first positive gap was seen in training, e.g. in the sanity-check validation).

    ``target_margin`` is ``Δr`` in reward units (``β·Δ* = Δr``), comparable with the rewards
    ``β·ρ``. Metrics: those above, ``spo/z_mean``, ``spo/target_gap_mean``, ``spo/score_scale``.

    Defaults (β = 0.1, ``target_reward_gap`` = 1: a target of 10 nats for the average pair) were
    checked on real data; see the SPO section of ``docs/losses.md`` for the run and its command.

    Args:
        beta: inverse temperature β; the target log-ratio margin is ``Δr/β``; > 0.
        alpha: weight α of the rejected-log-ratio penalty ``softplus(β·ρ_l)``; ≥ 0.
        target_reward_gap: ``Δr`` of an average pair (and of pairs without usable scores), in
            reward units; > 0.
        use_scores: scale ``Δr`` by the pair's score gap when the batch has scores.
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "(Δr/2)·g(z) + α·softplus(βρ_l), z = βΔ/Δr, g = −z·e^{−z} (z ≥ 0), −z (z < 0)"
    paper = "Tan 2025, arXiv 2508.07137 (z, Δr, g below 0 and the α term: lit_align's choice)"

    def __init__(
        self,
        beta: float = 0.1,
        alpha: float = 0.0,
        target_reward_gap: float = 1.0,
        use_scores: bool = True,
        **modifiers: Any,
    ) -> None:
        super().__init__(beta, **modifiers)
        require(alpha >= 0, "alpha", f"must be >= 0, got {alpha}")
        require(target_reward_gap > 0, "target_reward_gap", f"must be > 0, got {target_reward_gap}")
        self.alpha = alpha
        self.target_reward_gap = target_reward_gap
        self.use_scores = use_scores
        self.score_scale = RunningMean()

    def reward_gap(self, batch: PreferenceBatch, like: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The ``(B,)`` positive reward gaps ``Δr`` and the fractions of fallback pairs."""
        constant = torch.full_like(like, self.target_reward_gap)  # (B,)
        if not self.use_scores or batch.score_chosen is None or batch.score_rejected is None:
            ones = like.new_ones(())
            return constant, {"spo/unscored": ones, "spo/score_fallback": ones}
        gap = (batch.score_chosen - batch.score_rejected).to(like)  # (B,)
        if self.training:
            self.score_scale.update(gap[gap > 0])
        scale = self.score_scale.mean.to(like)  # 0 until a positive gap was seen in training
        usable = (gap > 0) & (scale > 0)
        scaled = self.target_reward_gap * gap / torch.where(usable, scale, 1.0)
        fractions = {
            "spo/unscored": like.new_zeros(()),
            "spo/tied_scores": (gap == 0).to(like).mean(),
            "spo/inverted_scores": (gap < 0).to(like).mean(),
            "spo/score_fallback": (~usable).to(like).mean(),
            "spo/score_scale": scale.clone(),
        }
        return torch.where(usable, scaled, constant), fractions

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        gap, metrics = self.reward_gap(inputs.batch, rho_w.detach())  # (B,)
        z = self.beta * (rho_w - rho_l) / gap  # (B,)
        losses = 0.5 * gap * spo_shape(z)
        if self.alpha > 0:
            losses = losses + self.alpha * F.softplus(self.beta * rho_l)
        metrics.update({"spo/z_mean": z.detach().mean(), "spo/target_gap_mean": gap.mean()})
        return PairTerms(losses, target_margin=gap, metrics=metrics)
