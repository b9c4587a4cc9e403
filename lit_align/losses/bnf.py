"""BNF: Bidirectional Negative Feedback, a token-level loss without β or margin."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lit_align.losses._common import split_by_label
from lit_align.losses.base import PreferenceLoss, require
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps

LengthNormalization = Literal["min_in_batch", "own_length"]
Form = Literal["exact", "author_code"]
AUTHOR_EPS = 1e-6
"""The constant of the first author's code in ``P/(R + ε)`` and ``(1 − q + ε)/(1 − P + ε)``."""


def bnf_token_scores(logp: Tensor, logr: Tensor, entropy: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token BNF scores ``S_t`` (exact value, exact gradient) and weights ``w_t``.

    Args:
        logp: ``(N, T)`` policy log-prob ``log P`` of each label token, with gradient.
        logr: ``(N, T)`` reference log-prob ``log R``.
        entropy: ``(N, T)`` policy entropy ``H`` of the predicting distribution, no gradient.

    Returns:
        ``(scores, weights)``, each ``(N, T)``; ``weights`` is detached.
    """
    with torch.no_grad():
        lp = logp.detach().clamp(max=0)  # log-probs are <= 0; the clamp absorbs rounding
        lr = logr.clamp(max=0)
        log_a = torch.minimum(lp - lr, torch.zeros_like(lp))  # log q(y_t) = log min(P/R, 1)
        a, p = log_a.exp(), lp.exp()
        one_minus_p = (-torch.expm1(lp)).clamp(min=torch.finfo(lp.dtype).tiny)
        below = log_a < 0  # P < R, hence P < 1: the only case where q moves mass to other tokens
        # (1 − a)/(1 − P) ∈ [0, 1]; where a = 1 (including P → 1) the other tokens get q = 0.
        coef = torch.where(below, -torch.expm1(log_a) / one_minus_p, torch.zeros_like(lp))
        others = (-entropy - p * lp).clamp(max=0)  # Σ_{v≠y} p(v)·log p(v) = −H − P·log P
        value = a * lp + coef * others
        # w = (a − P)/(1 − P) = P(1 − R)/(R(1 − P)), written with expm1 to avoid cancellation.
        ratio = p * torch.expm1(-lr) / one_minus_p
        weights = torch.where(below, ratio, torch.ones_like(lp)).clamp(0, 1)
    return value + weights * (logp - logp.detach()), weights


def bnf_token_scores_author(logp: Tensor, logr: Tensor, entropy: Tensor) -> tuple[Tensor, Tensor]:
    """The first author's per-token scores (``form="author_code"``), with their ``1e-6`` terms.

    ``q(y) = min(P/(R + ε), 1)`` and ``q(v) = p(v)·c`` for ``v ≠ y`` with
    ``c = (1 − q(y) + ε)/(1 − P + ε)``, in probability space, so ``Σ_v q(v) = q(y) + c(1 − P)``
    is not exactly 1 (``c > 0`` even when ``q(y) = 1``). The gradient of ``Σ_v sg(q(v)) log p(v)``
    is then ``q(k) − p(k)·Σ_v q(v)``, which equals that of ``sg(w)·log P`` with
    ``w = q(y) − c·P``. Same arguments and returns as :func:`bnf_token_scores`.
    """
    with torch.no_grad():
        lp = logp.detach()
        p, r = lp.exp(), logr.exp()
        q_y = (p / (r + AUTHOR_EPS)).clamp(max=1)
        coef = (1 - q_y + AUTHOR_EPS) / (1 - p + AUTHOR_EPS)
        others = (-entropy - p * lp).clamp(max=0)  # Σ_{v≠y} p(v)·log p(v)
        value = q_y * lp + coef * others
        weights = q_y - coef * p
    return value + weights * (logp - lp), weights


def identical_pairs(batch: PreferenceBatch) -> Tensor:
    """``(B,)`` True where the chosen and rejected rows hold the same tokens."""
    ids_w, ids_l = batch.input_ids.chunk(2)  # (B, T) each
    att_w, att_l = batch.attention_mask.chunk(2)
    resp_w, resp_l = batch.response_mask.chunk(2)
    same = (ids_w == ids_l) & (att_w == att_l) & (resp_w == resp_l)  # (B, T)
    return same.all(-1)


class BNF(PreferenceLoss):
    """Bidirectional Negative Feedback (Mao et al., arXiv 2410.04834, ICLR 2025).

    For each response token with label ``y``, policy distribution ``p``, ``P = p(y)`` and
    reference ``R = π_ref(y)``, the stop-gradient target distribution is ``q(y) = a = min(P/R, 1)``
    and ``q(v) = p(v)·(1 − a)/(1 − P)`` for ``v ≠ y``; the token score is
    ``S_t = Σ_v sg(q(v))·log p(v)``. Closed form (what is computed, from gathered log-probs and
    the entropy ``H = −Σ_v p(v) log p(v)``)::

        S_t = a·log P + (1 − a)/(1 − P) · Σ_{v≠y} p(v) log p(v)
            = a·log P + (1 − a)/(1 − P) · (−H − P·log P)

    When ``P ≥ R`` then ``a = 1`` and the second term is 0 (this covers ``P → 1``, where it would
    read 0/0); when ``P < R`` the coefficient ``(1 − a)/(1 − P) = (R − P)/(R(1 − P))`` lies in
    ``[0, 1]``. ``log a = min(log P − log R, 0)`` is computed in log space (the authors' code uses
    ``P/(R + 1e-6)``, which misbehaves for tiny ``R``).

    Gradient: with ``Σ_v q(v) = 1``, ``∂S_t/∂z_k = q(k) − p(k)``, which equals the gradient of
    ``sg(w_t)·log P`` with ``w_t = (a − P)/(1 − P)``, i.e. ``w_t = 1`` if ``P ≥ R`` else
    ``P(1 − R)/(R(1 − P))``. The loss is built as ``S_t + w_t·(log P − sg(log P))``: exact value,
    exact gradient, and only the gathered per-token log-probs carry gradient (no ``[N, T, V]``
    tensor is kept for backward).

    Sequence score ``S(y) = Σ_t S_t / T_norm``. ``length_normalization="min_in_batch"`` (default,
    as in the first author's code) divides by the shortest response length in the micro-batch, so
    the loss depends on how rows are grouped into micro-batches (not exactly invariant under
    gradient accumulation); ``"own_length"`` (an earlier revision) divides by each response's
    own length.

    Paired: ``ℓ = −[S(y_w) − S(y_l)]``, except pairs whose chosen and rejected rows hold identical
    tokens, which count as 0 (detected from ``input_ids`` and masks; the mean still runs over all
    ``B`` pairs). Unpaired: ``ℓ = −s·S(y)`` with ``s = +1`` for desirable rows, ``−1`` otherwise,
    averaged over rows. Rewards reported: ``ρ = log π − log π_ref`` (β = 1). Metrics:
    ``bnf/weight_mean`` (mean ``w_t`` over response tokens), ``bnf/identical_pairs``.

    ``form="author_code"`` reproduces the first author's code instead, ``1e-6`` terms included
    (:func:`bnf_token_scores_author`), for parity with published runs; ``"exact"`` (default) is
    the log-space form above, which the ``1e-6`` terms perturb when ``R`` or ``1 − P`` is small.

    Args:
        length_normalization: ``"min_in_batch"`` or ``"own_length"``, see above.
        form: ``"exact"`` (the equations, in log space) or ``"author_code"`` (the first author's
            code with its ``1e-6`` terms).
    """

    formula = "−[S(y_w) − S(y_l)] (unpaired: −s·S(y)), S(y) = Σ_t Σ_v sg(q_t(v))·log p_t(v) / T"
    paper = "Mao et al. 2024, arXiv 2410.04834 (ICLR 2025)"

    needs_token_logps = True
    needs_token_entropy = True
    supports_unpaired = True

    def __init__(
        self, length_normalization: LengthNormalization = "min_in_batch", form: Form = "exact"
    ) -> None:
        super().__init__()
        forms = ("exact", "author_code")
        require(form in forms, "form", f"must be one of {forms}, got {form!r}")
        self.form = form
        choices = ("min_in_batch", "own_length")
        require(
            length_normalization in choices,
            "length_normalization",
            f"must be one of {choices}, got {length_normalization!r}",
        )
        self.length_normalization = length_normalization

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        mask = batch.response_mask.bool()  # (N, T)
        scores_fn = bnf_token_scores if self.form == "exact" else bnf_token_scores_author
        token_scores, weights = scores_fn(
            policy.token_logps, reference.token_logps, policy.token_entropy
        )  # (N, T) each
        lengths = policy.count.clamp(min=1)  # (N,)
        if self.length_normalization == "min_in_batch":
            lengths = lengths.min().expand_as(lengths)
        scores = torch.where(mask, token_scores, 0).sum(-1) / lengths  # (N,)
        rho = (policy.sum - reference.sum).detach()  # (N,)
        metrics = {"bnf/weight_mean": weights[mask].mean() if mask.any() else weights.new_ones(())}
        if batch.paired:
            s_w, s_l = scores.chunk(2)  # (B,) each
            same = identical_pairs(batch)
            loss = -torch.where(same, 0, s_w - s_l).mean()
            chosen, rejected = rho.chunk(2)
            metrics["bnf/identical_pairs"] = same.float().mean()
        else:
            sign = batch.labels.to(scores.dtype) * 2 - 1  # (N,) +1 desirable, −1 undesirable
            loss = -(sign * scores).mean()
            chosen, rejected = split_by_label(rho, batch.labels)
        return LossOutput(loss, chosen, rejected, metrics=metrics)
