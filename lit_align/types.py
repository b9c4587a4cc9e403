"""Frozen records that flow through one training step.

Data flows one way::

    PreferenceBatch -> policy SequenceLogps -> reference SequenceLogps (or None)
        -> PreferenceLoss -> LossOutput -> StepRecord (detached, read by callbacks)

Row layout convention (``N`` rows of length ``T``):

* paired batches hold ``B`` pairs as ``N = 2B`` rows, the ``B`` chosen rows first, then the
  ``B`` rejected rows in the same order (row ``i`` and row ``B + i`` share a prompt);
* unpaired batches hold ``N = B`` rows, each with a boolean ``labels[i]`` (desirable or not).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class PreferenceBatch:
    """A collated batch of tokenised preference data.

    Attributes:
        input_ids: ``(N, T)`` token ids, right-padded.
        attention_mask: ``(N, T)`` 1 for real tokens, 0 for padding.
        response_mask: ``(N, T)`` bool, True where the token belongs to the response (it is
            scored); prompt and padding positions are False.
        labels: ``(N,)`` bool for unpaired batches (True = desirable); None for paired batches.
        score_chosen: ``(B,)`` float scores of the chosen responses when the data carries them.
        score_rejected: ``(B,)`` float scores of the rejected responses.
        reference_logps: precomputed reference log-probs for these rows, when cached.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    labels: Tensor | None = None
    score_chosen: Tensor | None = None
    score_rejected: Tensor | None = None
    reference_logps: SequenceLogps | None = None

    @property
    def paired(self) -> bool:
        return self.labels is None

    def chosen_only(self) -> PreferenceBatch:
        """The chosen rows of a paired batch as an unpaired batch of ``B`` desirable rows (for
        losses that never read the rejected ones, ``needs_rejected = False``)."""
        rows = slice(0, self.num_rows // 2)
        ref = None if self.reference_logps is None else self.reference_logps.chosen()
        return PreferenceBatch(
            input_ids=self.input_ids[rows],
            attention_mask=self.attention_mask[rows],
            response_mask=self.response_mask[rows],
            labels=self.input_ids.new_ones(self.num_rows // 2, dtype=torch.bool),
            reference_logps=ref,
        )

    @property
    def num_rows(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_examples(self) -> int:
        """Pairs for a paired batch, labelled rows for an unpaired one (KL rows not counted)."""
        return self.num_rows // 2 if self.paired else self.labels.shape[0]

    def to(self, device: torch.device | str) -> PreferenceBatch:
        def move(x):
            return None if x is None else x.to(device, non_blocking=True)

        ref = None if self.reference_logps is None else self.reference_logps.to(device)
        return PreferenceBatch(
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            response_mask=move(self.response_mask),
            labels=move(self.labels),
            score_chosen=move(self.score_chosen),
            score_rejected=move(self.score_rejected),
            reference_logps=ref,
        )


@dataclass(frozen=True)
class PackedLayout:
    """The packed input of a batch and how it maps to the padded ``(N, T)`` view.

    Attributes:
        input_ids: ``(1, L)`` the real tokens of the ``N`` sequences, back to back.
        position_ids: ``(1, L)`` position of each token within its own sequence.
        source: ``(M,)`` packed position that predicts each scored (response) token.
        rows: ``(M,)`` row of each scored token in the padded view.
        cols: ``(M,)`` column of each scored token in the padded view.
        cu_seqlens: ``(N + 1,)`` int32 start of each sequence in the packed row, then ``L``.
        max_seqlen: the longest sequence (flash attention's variable-length kernels).
    """

    input_ids: Tensor
    position_ids: Tensor
    source: Tensor
    rows: Tensor
    cols: Tensor
    cu_seqlens: Tensor
    max_seqlen: int

    def to(self, device: torch.device | str) -> PackedLayout:
        tensors = {
            f.name: getattr(self, f.name).to(device, non_blocking=True)
            for f in fields(self)
            if f.name != "max_seqlen"
        }
        return PackedLayout(**tensors, max_seqlen=self.max_seqlen)

    def attention_kwargs(self, attn_implementation: str | None) -> dict[str, Any]:
        """Extra decoder arguments: the host-made ``cu_seqlens`` for flash attention, else none."""
        if "flash" not in (attn_implementation or ""):
            return {}
        lengths = {"cu_seq_lens_q": self.cu_seqlens, "cu_seq_lens_k": self.cu_seqlens}
        return {**lengths, "max_length_q": self.max_seqlen, "max_length_k": self.max_seqlen}


@dataclass(frozen=True)
class PackedBatch(PreferenceBatch):
    """A :class:`~lit_align.types.PreferenceBatch` (the padded view) plus its packed layout.

    Losses read the padded fields as usual; :class:`~lit_align.scorer.CausalLMScorer` runs the
    decoder on ``packed`` instead.
    """

    packed: PackedLayout | None = None

    def to(self, device: torch.device | str) -> PackedBatch:
        base = super().to(device)
        padded = {f.name: getattr(base, f.name) for f in fields(base)}
        return PackedBatch(**padded, packed=self.packed.to(device))


@dataclass(frozen=True)
class SequenceLogps:
    """Log-probabilities of the response tokens of ``N`` rows, computed in float32.

    Attributes:
        sum: ``(N,)`` sum of log p(token) over response tokens (prompt and padding masked).
        count: ``(N,)`` number of response tokens (float, for division).
        token_logps: ``(N, T)`` per-token log-probs aligned with ``input_ids`` (position ``t`` is
            log p(input_ids[t] | input_ids[:t])), 0 outside the response; None unless asked for.
        token_entropy: ``(N, T)`` entropy of the policy's next-token distribution at the position
            that predicts token ``t``, without gradient, 0 outside the response; None unless
            asked for.
        token_log_expected_prob: ``(N, T)`` ``log Σ_v p(v)²`` of the same distribution (the log
            of the policy's expected token probability, WPO's per-token normaliser), without
            gradient, 0 outside the response; computed with ``token_entropy``.
    """

    sum: Tensor
    count: Tensor
    token_logps: Tensor | None = None
    token_entropy: Tensor | None = None
    token_log_expected_prob: Tensor | None = None

    @property
    def mean(self) -> Tensor:
        """``(N,)`` per-token mean log-prob."""
        return self.sum / self.count.clamp(min=1)

    def chosen(self) -> SequenceLogps:
        """The first half of the rows (paired layout)."""
        return self._rows(slice(0, self.sum.shape[0] // 2))

    def rejected(self) -> SequenceLogps:
        """The second half of the rows (paired layout)."""
        return self._rows(slice(self.sum.shape[0] // 2, None))

    def _rows(self, rows: slice) -> SequenceLogps:
        def pick(x):
            return None if x is None else x[rows]

        return self._map(lambda x: x[rows])

    def detach(self) -> SequenceLogps:
        return self._map(Tensor.detach)

    def to(self, device: torch.device | str) -> SequenceLogps:
        return self._map(lambda x: x.to(device, non_blocking=True))

    def _map(self, fn) -> SequenceLogps:
        """The same record with ``fn`` applied to every tensor field that is set."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return SequenceLogps(**{k: None if v is None else fn(v) for k, v in values.items()})


@dataclass(frozen=True)
class LossOutput:
    """What a :class:`~lit_align.losses.PreferenceLoss` returns.

    Attributes:
        loss: scalar to minimise (mean over the examples of the micro-batch).
        chosen_rewards: ``(B,)`` implicit rewards of the chosen responses (detached), e.g.
            ``β·(c − c_ref)``; for unpaired batches, the rewards of the desirable rows.
        rejected_rewards: ``(B,)`` the same for the rejected (undesirable) responses.
        target_margin: ``(B,)`` the finite reward margin the loss drives towards, for losses that
            have one (SPO, IPO); None otherwise.
        metrics: extra scalar metrics (detached), logged under their names.
    """

    loss: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    target_margin: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class StepRecord:
    """Detached summary of one step, returned by the module under ``"record"`` for callbacks.

    Attributes:
        loss: scalar loss of the micro-batch.
        chosen_rewards: ``(B,)`` standard implicit rewards ``β·ρ`` (summed log-ratios) of the
            chosen (desirable) responses.
        rejected_rewards: ``(B,)`` the same for the rejected (undesirable) responses.
        chosen_logps: ``(B,)`` policy log-prob sums of the chosen responses.
        rejected_logps: ``(B,)`` policy log-prob sums of the rejected responses.
        target_margin: ``(B,)`` the loss's finite reward-margin target, or None.
        log_ratio_margins: ``(B,)`` policy/reference log-ratio margins ``Δ = ρ_w − ρ_l`` in nats
            (independent of any β, so comparable across losses); None without a reference.
        metrics: the loss's extra metrics (and its own-scale rewards, see
            :mod:`lit_align.records`).
        paired: the rewards come from pairs (row ``i`` of each side share a prompt); False for
            unpaired data, whose desirable and undesirable rows are unrelated.
    """

    loss: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor
    chosen_logps: Tensor
    rejected_logps: Tensor
    target_margin: Tensor | None = None
    log_ratio_margins: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)
    paired: bool = True

    @property
    def margins(self) -> Tensor:
        """``(B,)`` reward margins, chosen minus rejected."""
        return self.chosen_rewards - self.rejected_rewards
