"""Reference-free paired losses: SimPO, CPO, ORPO (no reference model is built or run)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses.base import PreferenceLoss, require
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps


def log1mexp(x: Tensor) -> Tensor:
    """``log(1 − e^x)`` for log-probs ``x``, clamped to ``x ≤ −1e−6`` so it stays finite at 0."""
    return torch.log(-torch.expm1(x.clamp(max=-1e-6)))


class SimPO(PreferenceLoss):
    """Simple Preference Optimization (Meng et al. 2024, arXiv 2405.14734).

    ``ℓ = −logσ(β(c̄ − r̄) − γ)`` on per-token mean log-probs, with target reward margin γ.
    Rewards reported: ``β·c̄`` and ``β·r̄``, logged as ``simpo/rewards/*`` (``rewards/*`` are
    ``β·c`` and ``β·r`` on summed log-probs).

    Args:
        beta: reward scale β (the paper uses 2 to 10); > 0.
        gamma: target reward margin γ (the paper advises ``γ/β`` of 0.3 to 0.55); ≥ 0.
    """

    formula = "−logσ(β(c̄ − r̄) − γ)"
    paper = "Meng et al. 2024, arXiv 2405.14734"

    requires_reference = False
    own_reward_scale = "simpo"

    def __init__(self, beta: float = 2.0, gamma: float = 1.0) -> None:
        super().__init__()
        require(beta > 0, "beta", f"must be > 0, got {beta}")
        require(gamma >= 0, "gamma", f"must be >= 0, got {gamma}")
        self.beta = beta
        self.gamma = gamma

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        chosen, rejected = (self.beta * policy.mean).chunk(2)  # (B,) each
        loss = -F.logsigmoid(chosen - rejected - self.gamma).mean()
        return LossOutput(loss, chosen.detach(), rejected.detach())


class CPO(PreferenceLoss):
    """Contrastive Preference Optimization (Xu et al. 2024, arXiv 2401.08417).

    ``ℓ = −logσ(β(c − r)) + α·NLL(y_w)`` with sequence log-probs in the preference term and
    ``NLL(y_w) = −c̄`` (per-token mean, each pair weighted equally, as in :class:`SFT`; TRL's
    token-mean over the whole micro-batch weighs long responses more). Rewards reported: ``β·c``
    and ``β·r``, the operands of the sigmoid. Metric: ``cpo/nll``.

    Args:
        beta: inverse temperature β; > 0.
        alpha: weight α of the NLL term; ≥ 0.
    """

    formula = "−logσ(β(c − r)) − α·c̄"
    paper = "Xu et al. 2024, arXiv 2401.08417"

    requires_reference = False

    def __init__(self, beta: float = 0.1, alpha: float = 1.0) -> None:
        super().__init__()
        require(beta > 0, "beta", f"must be > 0, got {beta}")
        require(alpha >= 0, "alpha", f"must be >= 0, got {alpha}")
        self.beta = beta
        self.alpha = alpha

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        chosen, rejected = (self.beta * policy.sum).chunk(2)  # (B,) each
        nll = -policy.mean.chunk(2)[0]  # (B,)
        loss = (-F.logsigmoid(chosen - rejected) + self.alpha * nll).mean()
        metrics = {"cpo/nll": nll.detach().mean()}
        return LossOutput(loss, chosen.detach(), rejected.detach(), metrics=metrics)


class ORPO(PreferenceLoss):
    """Odds Ratio Preference Optimization (Hong et al. 2024, arXiv 2403.07691).

    ``ℓ = NLL(y_w) − λ·logσ(log_odds)`` with ``P = e^{c̄}`` per-token-mean likelihoods and
    ``log_odds = log(P_w/(1 − P_w)) − log(P_l/(1 − P_l)) = (c̄ − r̄) − (log(1 − e^{c̄}) −
    log(1 − e^{r̄}))``. ``log(1 − e^x)`` uses ``expm1`` and clamps ``x ≤ −1e−6`` (no gradient
    beyond, which only a response of probability ≈ 1 reaches). ``NLL(y_w) = −c̄`` as in
    :class:`SFT`. Rewards reported: ``c̄`` and ``r̄``, logged as ``orpo/rewards/*``
    (``rewards/*`` are the summed log-probs ``c`` and ``r``). Metrics: ``orpo/log_odds``,
    ``orpo/nll``.

    Args:
        lam: weight λ of the odds-ratio term (TRL's ``beta``); ≥ 0.
    """

    formula = "−c̄ − λ·logσ(c̄ − r̄ − log(1−e^{c̄}) + log(1−e^{r̄}))"
    paper = "Hong et al. 2024, arXiv 2403.07691"

    requires_reference = False
    own_reward_scale = "orpo"

    def __init__(self, lam: float = 0.1) -> None:
        super().__init__()
        require(lam >= 0, "lam", f"must be >= 0, got {lam}")
        self.lam = lam

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        chosen, rejected = policy.mean.chunk(2)  # (B,) each
        log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
        loss = (-chosen - self.lam * F.logsigmoid(log_odds)).mean()
        metrics = {"orpo/log_odds": log_odds.detach().mean(), "orpo/nll": -chosen.detach().mean()}
        return LossOutput(loss, chosen.detach(), rejected.detach(), metrics=metrics)
