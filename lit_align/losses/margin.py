"""MarginLoss: the base of every reference-based paired loss, with its three modifiers.

:class:`MarginLoss` is the base of every reference-based paired loss ``ℓ(ρ_w, ρ_l)``. It computes
the log-ratios once and applies three optional modifiers in one place, so every such loss gets them:

* ``divergence`` — f-DPO (Wang et al. 2023, "Beyond Reverse KL", arXiv 2309.16240): the
  reverse-KL log-ratio ``ρ`` is replaced by ``s(ρ) = f'(u) − f'(1)`` with ``u = π/π_ref = e^ρ``.
  Subtracting ``f'(1)`` (i.e. using the generator ``f(u) − f'(1)(u − 1)``, which defines the same
  divergence) makes ``s(0) = 0`` for every divergence, so rewards vanish and DPO starts at ``ln 2``
  when policy == reference. Reverse KL ``s = ρ``; forward KL ``s = 1 − e^{−ρ}``;
  JS ``s = log(2u/(1+u)) = log 2 + logσ(ρ)``; α-divergence ``s = (1 − e^{−αρ})/α``.
* ``ld_alpha`` — LD-DPO (Liu et al. 2024, arXiv 2409.06411): in each pair the tokens past
  the shared ("public") length ``min(|y_w|, |y_l|)`` count with weight ``α`` in ``log π`` (policy
  and reference alike). Needs per-token log-probs, so such an instance sets ``needs_token_logps``.
* ``wpo`` — WPO (Zhou et al. 2024, arXiv 2406.11827, weight alignment): each pair's loss is
  weighted by ``sg(w(y_w)·w(y_l))`` with
  ``w(y) = exp((1/|y|)·Σ_t log[π(y_t) / Σ_v π_t(v)²])``: each token's probability is divided by
  the policy's own expected token probability ``Σ_v π_t(v)²`` at that position, so a response
  the policy would itself sample weighs about 1 whatever the vocabulary size (the raw
  ``exp(c̄ + r̄)`` is ~1e-6 on a real vocabulary). As TRL's ``use_weighting`` the pair weight is
  clipped at 1 (the paper does not clip), so weighting never enlarges a pair's gradient. Reads
  the policy's per-token ``log Σ_v π(v)²`` (``needs_token_entropy``, which computes it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses._common import linear_below
from lit_align.losses.base import PreferenceLoss, require
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps

Divergence = Literal["reverse_kl", "forward_kl", "js", "alpha"]
# Largest exponent evaluated by the exponential divergences; beyond it the score continues linearly.
_EXP_MAX = 20.0


def divergence_score(rho: Tensor, divergence: Divergence, alpha: float) -> Tensor:
    """The f-DPO score ``s(ρ) = f'(e^ρ) − f'(1)`` (module docstring), shaped like ``rho``."""
    if divergence == "reverse_kl":
        return rho
    if divergence == "js":
        return math.log(2.0) + F.logsigmoid(rho)
    a = 1.0 if divergence == "forward_kl" else alpha

    def power(r: Tensor) -> tuple[Tensor, Tensor]:  # (1 − e^{−a·r})/a and its derivative e^{−a·r}
        return -torch.expm1(-a * r) / a, torch.exp(-a * r)

    return linear_below(power, rho, -_EXP_MAX / a)


def length_desensitize(
    logps: SequenceLogps, response_mask: Tensor, ld_alpha: float
) -> SequenceLogps:
    """LD-DPO log-probs: tokens past the pair's public length count with weight ``ld_alpha``.

    Args:
        logps: paired rows with ``token_logps`` (``(2B, T)``).
        response_mask: ``(2B, T)`` bool.
        ld_alpha: weight of the excess tokens, in ``[0, 1]``.
    """
    if logps.token_logps is None:
        raise ValueError("ld_alpha needs per-token log-probs (needs_token_logps) for both models")
    mask = response_mask.bool()  # (2B, T)
    position = mask.cumsum(-1)  # (2B, T) 1-based index among the row's response tokens
    public = torch.minimum(*logps.count.chunk(2)).repeat(2)  # (2B,)
    ones = torch.ones_like(logps.token_logps)
    weight = torch.where(position <= public[:, None], ones, ld_alpha * ones) * mask
    return dataclasses.replace(logps, sum=(logps.token_logps * weight).sum(-1))


def wpo_weights(policy: SequenceLogps) -> Tensor:
    """``(B,)`` WPO pair weights ``w(y_w)·w(y_l)`` (module docstring), detached, in ``(0, 1]``."""
    if policy.token_log_expected_prob is None:
        raise ValueError("wpo needs the policy's per-token log Σ p² (needs_token_entropy)")
    normaliser = policy.token_log_expected_prob.detach().sum(-1)  # (2B,)
    aligned = (policy.sum.detach() - normaliser) / policy.count.clamp(min=1)  # (2B,)
    chosen, rejected = aligned.chunk(2)
    return torch.exp(chosen + rejected).clamp(max=1.0)


@dataclass(frozen=True)
class PairInputs:
    """What a :class:`MarginLoss` hands to ``pair_loss`` besides the log-ratios.

    Attributes:
        policy: policy log-probs of the ``2B`` rows (LD-DPO-modified when asked).
        reference: the same under the reference.
        batch: the batch, for scores and masks.
    """

    policy: SequenceLogps
    reference: SequenceLogps
    batch: PreferenceBatch


@dataclass(frozen=True)
class PairTerms:
    """What a :class:`MarginLoss` computes per pair.

    Attributes:
        losses: ``(B,)`` per-pair losses.
        target_margin: ``(B,)`` finite reward-margin target in reward units, or None.
        metrics: extra detached scalars.
    """

    losses: Tensor
    target_margin: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


class MarginLoss(PreferenceLoss):
    """Base of the reference-based paired losses ``ℓ(ρ_w, ρ_l)``; owns β and the modifiers.

    ``forward`` computes ``ρ = log π − log π_ref`` per row (per-token means when the subclass sets
    ``length_normalized``), applies the modifiers of the module docstring, calls
    :meth:`pair_loss` and averages over pairs (WPO-weighted when asked). Rewards are ``β·s(ρ)``,
    the implicit rewards of the log-ratios the loss actually uses.

    Args:
        beta: inverse temperature β of the implicit reward ``β·ρ``; > 0.
        divergence: f-divergence of the policy–reference constraint (f-DPO).
        divergence_alpha: α of the ``"alpha"`` divergence, in ``(0, 1]``.
        ld_alpha: LD-DPO weight of the tokens past the pair's shared length, in ``[0, 1]``;
            None (the default) turns LD-DPO off (same as 1.0, without per-token log-probs).
        wpo: weight each pair by WPO's aligned likelihood weight ``w(y_w)·w(y_l)`` (each token's
            probability over the policy's ``Σ_v π(v)²``, averaged in log space), clipped at 1.
    """

    length_normalized: bool = False

    def __init__(
        self,
        beta: float = 0.1,
        divergence: Divergence = "reverse_kl",
        divergence_alpha: float = 0.5,
        ld_alpha: float | None = None,
        wpo: bool = False,
    ) -> None:
        super().__init__()
        require(beta > 0, "beta", f"must be > 0, got {beta}")
        choices = get_args(Divergence)
        require(
            divergence in choices, "divergence", f"must be one of {choices}, got {divergence!r}"
        )
        require(
            0 < divergence_alpha <= 1,
            "divergence_alpha",
            f"must be in (0, 1], got {divergence_alpha}",
        )
        require(
            ld_alpha is None or 0 <= ld_alpha <= 1, "ld_alpha", f"must be in [0, 1], got {ld_alpha}"
        )
        self.beta = beta
        self.divergence = divergence
        self.divergence_alpha = divergence_alpha
        self.ld_alpha = ld_alpha
        self.wpo = wpo
        # Instance-level capabilities the module reads: LD-DPO re-weights single tokens, WPO
        # normalises each token by the policy's log Σ p² (computed with the entropy).
        self.needs_token_logps = ld_alpha is not None
        self.needs_token_entropy = wpo

    @property
    def reward_namespace(self) -> str | None:
        """The lower-case class name when the log-ratios are not plain summed ones (per-token
        means, an f-divergence score or LD-DPO's weighting), else None."""
        plain = not self.length_normalized and self.divergence == "reverse_kl"
        return None if plain and self.ld_alpha is None else type(self).__name__.lower()

    def reject_modifiers(self, names: tuple[str, ...], reason: str) -> None:
        """Raise :class:`LossConfigError` if one of the named modifiers is switched on."""
        active = {
            "divergence": self.divergence != "reverse_kl",
            "ld_alpha": self.ld_alpha is not None,
            "wpo": self.wpo,
        }
        for name in names:
            require(
                not active[name],
                name,
                f"must be left at its default for {type(self).__name__}: {reason}",
            )

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        weights = wpo_weights(policy) if self.wpo else None  # from the unmodified log-probs
        if self.ld_alpha is not None:
            policy = length_desensitize(policy, batch.response_mask, self.ld_alpha)
            reference = length_desensitize(reference, batch.response_mask, self.ld_alpha)
        rho_w, rho_l = self.logratios(policy, reference)  # (B,), (B,)
        terms = self.pair_loss(rho_w, rho_l, PairInputs(policy, reference, batch))
        losses = terms.losses if weights is None else terms.losses * weights
        return LossOutput(
            loss=losses.mean(),
            chosen_rewards=self.beta * rho_w.detach(),
            rejected_rewards=self.beta * rho_l.detach(),
            target_margin=terms.target_margin,
            metrics=terms.metrics,
        )

    def logratios(self, policy: SequenceLogps, reference: SequenceLogps) -> tuple[Tensor, Tensor]:
        """``(s(ρ_w), s(ρ_l))``, each ``(B,)``: the scored log-ratios of chosen and rejected."""
        rho = policy.sum - reference.sum  # (2B,)
        if self.length_normalized:
            rho = rho / policy.count.clamp(min=1)
        rho = divergence_score(rho, self.divergence, self.divergence_alpha)
        rho_w, rho_l = rho.chunk(2)
        return rho_w, rho_l

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        """Per-pair losses from the ``(B,)`` log-ratios; ``inputs`` serves the losses that also
        read raw log-probs, lengths or scores."""
        raise NotImplementedError
