"""Log-probabilities of response tokens from final hidden states, computed in chunks of tokens.

The naive way, ``log_softmax(lm_head(hidden))``, builds ``(N, T, V)`` logits for every position
and keeps them (plus their float32 copy) for backward: for ``N·T = 16k`` tokens and a 152k
vocabulary that is ~10 GB per float32 copy. Here instead:

* only the ``M`` positions that predict a response token are projected (prompt and padding
  never are);
* the ``M`` rows go through the lm_head ``chunk_size`` rows at a time, with float32 logits per
  chunk, so the largest temporary is ``(chunk_size, V)``;
* backward recomputes each chunk's logits from the saved ``hidden (M, H)`` and the per-row
  logsumexp ``(M,)`` (one extra lm_head matmul), so nothing of size ``M·V`` is kept.

FSDP2: :func:`response_logps` reads ``lm_head.weight`` / ``lm_head.bias`` directly instead of
calling ``lm_head``. Call it inside the forward of the FSDP module that owns the lm_head (the
root module in the usual per-layer-plus-root sharding), where those parameters are unsharded,
and do not ``fully_shard`` the lm_head on its own: its pre-forward all-gather would never run
and the weight would still be a sharded ``DTensor``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from lit_align.types import SequenceLogps


def _accum_dtype(x: Tensor) -> torch.dtype:
    """float32 for float32/bf16/fp16 inputs, float64 for float64 inputs (gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def _chunks(num_rows: int, chunk_size: int) -> Iterator[slice]:
    """Row slices ``[0, c), [c, 2c), ...`` covering ``num_rows`` rows."""
    return (slice(start, start + chunk_size) for start in range(0, num_rows, chunk_size))


def _chunk_logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, dtype: torch.dtype
) -> Tensor:
    """``(c, V)`` logits of one chunk of ``hidden (c, H)``, upcast to ``dtype``."""
    return F.linear(hidden, weight, bias).to(dtype)


def _entropy(logits: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """``(c,)`` entropy ``lse − Σ p·logits`` of the softmax ``p`` of ``logits (c, V)``, and
    ``(c,)`` ``log Σ p²`` (the log of the expected token probability, WPO's normaliser)."""
    probs = torch.sub(logits, lse[:, None]).exp_()  # (c, V)
    log_expected = probs.square().sum(-1).log()
    return lse - probs.mul_(logits).sum(-1), log_expected


def _grad_logits(logits: Tensor, lse: Tensor, targets: Tensor, grad_out: Tensor) -> Tensor:
    """``(c, V)`` gradient ``grad_out · (onehot(target) − softmax)``, overwriting ``logits``."""
    grad = logits.sub_(lse[:, None]).exp_().mul_(-grad_out[:, None])  # −grad_out · softmax
    return grad.scatter_add_(1, targets[:, None], grad_out[:, None])


def _cast_like(grad: Tensor | None, like: Tensor | None) -> Tensor | None:
    return None if grad is None else grad.to(like.dtype)


class _ChunkedTokenLogps(torch.autograd.Function):
    """log softmax(hidden @ weight.T + bias)[target], chunk by chunk, recomputed in backward."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        chunk_size: int,
        with_entropy: bool,
    ) -> tuple[Tensor, Tensor]:
        dtype = _accum_dtype(hidden)
        logps = hidden.new_empty(hidden.shape[0], dtype=dtype)  # (M,)
        lse = torch.empty_like(logps)  # (M,)
        entropy = torch.empty_like(logps) if with_entropy else logps.new_empty(0)
        log_expected = torch.empty_like(entropy)
        for rows in _chunks(hidden.shape[0], chunk_size):
            logits = _chunk_logits(hidden[rows], weight, bias, dtype)  # (c, V)
            lse[rows] = logits.logsumexp(-1)
            logps[rows] = logits.gather(1, targets[rows, None]).squeeze(1) - lse[rows]
            if with_entropy:
                entropy[rows], log_expected[rows] = _entropy(logits, lse[rows])
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk_size = chunk_size
        # Backward recomputes the logits under the same autocast state as this forward.
        ctx.device_type = hidden.device.type
        ctx.autocast = torch.is_autocast_enabled(ctx.device_type)
        ctx.autocast_dtype = torch.get_autocast_dtype(ctx.device_type)
        ctx.mark_non_differentiable(entropy, log_expected)
        return logps, entropy, log_expected

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_logps: Tensor, *_grad_stats: Tensor) -> tuple:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None  # (M, H)
        # Weight and bias gradients sum over all M rows: accumulate them in float32.
        grad_weight = torch.zeros_like(weight, dtype=lse.dtype) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=lse.dtype) if need_bias else None
        with torch.autocast(ctx.device_type, dtype=ctx.autocast_dtype, enabled=ctx.autocast):
            for rows in _chunks(hidden.shape[0], ctx.chunk_size):
                logits = _chunk_logits(hidden[rows], weight, bias, lse.dtype)  # (c, V)
                grad = _grad_logits(logits, lse[rows], targets[rows], grad_logps[rows])
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
                grad = grad.to(hidden.dtype)  # matmuls in the compute dtype (bf16 on GPU)
                if grad_hidden is not None:
                    grad_hidden[rows] = grad @ weight  # (c, H)
                if grad_weight is not None:
                    grad_weight += grad.T @ hidden[rows]  # (V, H)
        grads = (grad_hidden, _cast_like(grad_weight, weight), _cast_like(grad_bias, bias))
        return *grads, None, None, None


def chunked_token_logps(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None = None,
    chunk_size: int = 1024,
    with_entropy: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs of ``targets`` under ``softmax(hidden @ weight.T + bias)``, ``chunk_size`` rows
    at a time, never holding more than ``(chunk_size, V)`` logits.

    Backward recomputes each chunk's logits; only the inputs and the per-row logsumexp are
    saved. Works under ``torch.no_grad()``, with any subset of the inputs requiring grad, and
    under autocast (backward recomputes under the forward's autocast state).

    Args:
        hidden: ``(M, H)`` final hidden states, any float dtype.
        weight: ``(V, H)`` lm_head weight, same dtype as ``hidden`` (or under autocast).
        targets: ``(M,)`` long token ids to score.
        bias: ``(V,)`` lm_head bias, or None.
        chunk_size: rows projected at once; peak extra memory is a few ``(chunk_size, V)``
            float32 tensors.
        with_entropy: also return the entropy of each row's distribution (no gradient).

    Returns:
        ``logps (M,)`` and ``entropy (M,)`` or None, float32 (float64 for float64 inputs),
        computed from logits upcast to that dtype.

    Raises:
        ValueError: ``chunk_size`` is below 1.
    """
    logps, stats = _chunked_logps_and_stats(hidden, weight, targets, bias, chunk_size, with_entropy)
    return logps, None if stats is None else stats[0]


def _chunked_logps_and_stats(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    bias: Tensor | None,
    chunk_size: int,
    with_stats: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """:func:`chunked_token_logps` with ``(entropy, log Σ p²)`` (each ``(M,)``) when asked."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    logps, entropy, log_expected = _ChunkedTokenLogps.apply(
        hidden, weight, bias, targets, chunk_size, with_stats
    )
    return logps, (entropy, log_expected) if with_stats else None


def _scatter_tokens(values: Tensor, rows: Tensor, pos: Tensor, shape: torch.Size) -> Tensor:
    """``(N, T)`` zeros holding ``values (M,)`` at ``(rows, pos)``."""
    return values.new_zeros(shape).index_put((rows, pos), values)


def response_logps(
    hidden: Tensor,
    lm_head: nn.Module,
    input_ids: Tensor,
    response_mask: Tensor,
    *,
    chunk_size: int = 1024,
    with_token_logps: bool = False,
    with_entropy: bool = False,
) -> SequenceLogps:
    """Log-probs of the response tokens of ``N`` rows, projecting only response positions.

    Token ``t`` is predicted by position ``t − 1``, so a response token at position 0 has no
    prediction and is not scored. Reads ``lm_head.weight`` / ``lm_head.bias`` directly (see the
    FSDP2 note in the module docstring). Selecting the ``M`` positions is data-dependent, so
    this synchronises with the device once (packed batches select on the host instead, see
    :func:`selected_logps`).

    Args:
        hidden: ``(N, T, H)`` final hidden states (after the final norm).
        lm_head: ``nn.Linear``-like module with ``.weight (V, H)`` and optional ``.bias (V,)``.
        input_ids: ``(N, T)`` token ids.
        response_mask: ``(N, T)`` bool, True where the token is a response token.
        chunk_size: rows per lm_head chunk, see :func:`chunked_token_logps`.
        with_token_logps: also return ``token_logps (N, T)``.
        with_entropy: also return ``token_entropy (N, T)`` and ``token_log_expected_prob
            (N, T)`` (no gradient).

    Returns:
        :class:`~lit_align.types.SequenceLogps` with per-token values aligned with
        ``input_ids`` and 0 outside the response.

    Raises:
        ValueError: the shapes of ``hidden``, ``input_ids`` and ``response_mask`` disagree.
    """
    if hidden.shape[:2] != input_ids.shape or response_mask.shape != input_ids.shape:
        raise ValueError(
            "response_logps expects hidden (N, T, H), input_ids (N, T) and response_mask "
            f"(N, T); got {tuple(hidden.shape)}, {tuple(input_ids.shape)} and "
            f"{tuple(response_mask.shape)}"
        )
    scored = response_mask[:, 1:].bool()  # (N, T-1): position p predicts response token p + 1
    rows, pos = scored.nonzero(as_tuple=True)  # (M,), (M,): the one device sync
    return selected_logps(
        hidden[rows, pos],  # (M, H)
        input_ids[rows, pos + 1],  # (M,)
        rows,
        pos + 1,
        lm_head,
        response_mask,
        chunk_size=chunk_size,
        with_token_logps=with_token_logps,
        with_entropy=with_entropy,
    )


def selected_logps(
    hidden: Tensor,
    targets: Tensor,
    rows: Tensor,
    cols: Tensor,
    lm_head: nn.Module,
    response_mask: Tensor,
    *,
    chunk_size: int,
    with_token_logps: bool,
    with_entropy: bool,
) -> SequenceLogps:
    """Log-probs of ``M`` already selected tokens, summed per row and placed at ``(rows, cols)``.

    The core of :func:`response_logps`; packed batches call it directly with a selection made
    on the host by the collator (:mod:`lit_align.data.packing`), so no device sync is needed.

    Args:
        hidden: ``(M, H)`` final hidden states of the positions that predict the tokens.
        targets: ``(M,)`` the token ids predicted.
        rows: ``(M,)`` row of each token in the padded ``(N, T)`` view the loss reads.
        cols: ``(M,)`` column of each token in that view.
        lm_head: as for :func:`response_logps`.
        response_mask: ``(N, T)`` response mask of the padded view (counts and shapes).
        chunk_size: as for :func:`response_logps`.
        with_token_logps: as for :func:`response_logps`.
        with_entropy: as for :func:`response_logps`.
    """
    bias = getattr(lm_head, "bias", None)
    logps, stats = _chunked_logps_and_stats(
        hidden, lm_head.weight, targets, bias, chunk_size, with_entropy
    )
    shape = response_mask.shape
    entropy, log_expected = (None, None) if stats is None else stats
    return SequenceLogps(
        sum=logps.new_zeros(shape[0]).index_add(0, rows, logps),  # (N,)
        count=response_mask[:, 1:].sum(1, dtype=torch.float32),  # (N,)
        token_logps=_scatter_tokens(logps, rows, cols, shape) if with_token_logps else None,
        token_entropy=_scatter_tokens(entropy, rows, cols, shape) if with_entropy else None,
        token_log_expected_prob=(
            _scatter_tokens(log_expected, rows, cols, shape) if with_entropy else None
        ),
    )


def naive_response_logps(
    hidden: Tensor,
    lm_head: nn.Module,
    input_ids: Tensor,
    response_mask: Tensor,
    *,
    chunk_size: int = 1024,
    with_token_logps: bool = False,
    with_entropy: bool = False,
) -> SequenceLogps:
    """Reference for :func:`response_logps`: full ``(N, T, V)`` logits and ``log_softmax``.

    The tests' ground truth and the benchmarks' "before" baseline. Written independently of
    :func:`response_logps` (masks, not index selection) so that it checks it. ``chunk_size`` is
    ignored; it is accepted so the two functions are interchangeable.
    """
    logp = lm_head(hidden).to(_accum_dtype(hidden)).log_softmax(-1)[:, :-1]  # (N, T-1, V)
    mask = F.pad(response_mask[:, 1:].bool(), (1, 0))  # (N, T); token 0 has no predictor
    token = F.pad(logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1), (1, 0)) * mask  # (N, T)
    entropy = log_expected = None
    if with_entropy:
        with torch.no_grad():
            entropy = F.pad(-(logp.exp() * logp).sum(-1), (1, 0)) * mask  # (N, T)
            log_expected = F.pad((2 * logp).logsumexp(-1), (1, 0)) * mask  # (N, T) log Σ p²
    token_logps = token if with_token_logps else None
    count = mask.sum(1, dtype=torch.float32)
    return SequenceLogps(token.sum(1), count, token_logps, entropy, log_expected)
