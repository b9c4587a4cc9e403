"""Padding-free batches: sequences packed back to back in one row, batched to a token budget.

``--data.packing true --data.max_tokens_per_batch 16384`` replaces padded ``(N, T)`` batches
by one row of the ``L ≤ max_tokens_per_batch`` real tokens of all ``N`` sequences, with
position ids restarting at 0 for each sequence. How attention is kept inside each sequence
(Hugging Face's own packed-sequence support, chosen by ``--model.policy.attn_implementation``):

* ``flash_attention_2`` / ``_3`` (GPU): variable-length kernels over ``cu_seqlens``, which the
  collator computes on the host (no padding, no mask, linear memory). The fastest choice.
* ``flex_attention``: Hugging Face builds a document-causal ``BlockMask`` from the position
  ids; runs on GPU (compiled) and, slowly, on CPU.
* ``sdpa`` / ``eager``: Hugging Face builds a block-diagonal causal ``(1, 1, L, L)`` mask from
  the position ids. Exact and portable (the CPU tests use it), but the mask is quadratic in
  ``L``: keep budgets moderate, or use one of the above on GPU.

Every backend detects the sequence boundaries from the position ids, once per forward
(Transformers' ``find_packed_sequence_indices``, one host sync before the first layer).

The loss still reads the padded ``(N, T)`` view, in the usual layout (chosen rows first, then
rejected): :class:`~lit_align.types.PackedBatch` carries both, and the scorer maps the packed
hidden states back to it with an index list the collator made on the host (:func:`pack`), so
log-probs equal the padded path's and scoring needs no device sync.

Batches (:class:`TokenBudgetSampler`) are composed once, with ``--data.seed``: rows are
shuffled, cut into windows of about :data:`WINDOW_BUDGETS` budgets, each window is sorted by
length and filled greedily up to the budget (a pair, or an unpaired row and its KL row, is never
split). The composition is fixed across epochs, so every epoch has the same number of batches;
their order is reshuffled each epoch. Batches are dealt to ranks round-robin, repeated to a
multiple of the world size, so every rank runs the same number of steps. The loss stays a mean
over the examples of a batch, so a batch of few long pairs weighs each pair more than a batch of
many short ones, as with any token-budget batching.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from lit_align.data.collate import PreferenceCollator
from lit_align.data.sampler import ResumableLoader, ResumableSampler
from lit_align.types import PackedBatch, PackedLayout, PreferenceBatch

WINDOW_BUDGETS = 50
"""Rows are sorted by length within windows of about this many token budgets."""


def pack(batch: PreferenceBatch) -> PackedBatch:
    """Pack a right-padded batch (host side; the selection of scored tokens happens here).

    Raises:
        ValueError: a row is not right-padded (real tokens must come first).
    """
    mask = batch.attention_mask.bool()  # (N, T)
    lengths = mask.sum(1)  # (N,)
    if not torch.equal(mask, torch.arange(mask.shape[1]) < lengths[:, None]):
        raise ValueError("pack() needs right-padded rows, as PreferenceCollator makes them")
    starts = F.pad(lengths.cumsum(0), (1, 0))  # (N + 1,)
    rows, pos = batch.response_mask[:, 1:].bool().nonzero(as_tuple=True)  # (M,): host, no sync
    layout = PackedLayout(
        input_ids=batch.input_ids[mask][None],  # (1, L)
        position_ids=(mask.cumsum(1) - 1)[mask][None],  # (1, L)
        source=starts[rows] + pos,  # position pos of row r predicts its token pos + 1
        rows=rows,
        cols=pos + 1,
        cu_seqlens=starts.to(torch.int32),
        max_seqlen=int(lengths.max()),
    )
    padded = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return PackedBatch(**padded, packed=layout)


class PackingCollator:
    """Collates rows with ``collator`` (the padded view), then packs them (:func:`pack`)."""

    def __init__(self, collator: PreferenceCollator) -> None:
        self.collator = collator

    def __call__(self, rows: list[dict[str, Any]]) -> PackedBatch:
        return pack(self.collator(rows))


def row_tokens(data: datasets.Dataset, kl_rows: bool = False) -> list[int]:
    """Tokens each dataset row puts in a batch: prompt twice plus both responses for a pair;
    prompt plus completion for an unpaired row (twice with KL rows: an estimate, the KL row
    borrows the next row's prompt)."""
    names = [n for n in data.column_names if n.endswith("_ids")]
    table = data.select_columns(names).with_format("arrow")[:]
    size = {n: pc.list_value_length(table[n]).to_numpy().astype(np.int64) for n in names}
    if "completion_ids" in size:
        return ((size["prompt_ids"] + size["completion_ids"]) * (2 if kl_rows else 1)).tolist()
    return (2 * size["prompt_ids"] + size["chosen_ids"] + size["rejected_ids"]).tolist()


def compose(tokens: Sequence[int], max_tokens: int, seed: int | None) -> list[list[int]]:
    """Row indices cut into batches of at most ``max_tokens`` tokens (see the module docstring).

    ``seed`` None keeps the rows in order (no shuffle, no sorting): validation.
    """
    order = list(range(len(tokens)))
    if seed is not None:
        order = torch.randperm(len(order), generator=torch.Generator().manual_seed(seed)).tolist()
    batches: list[list[int]] = []
    window, window_tokens = [], 0
    for i in order + [None]:  # None flushes the last window
        if i is not None:
            window.append(i)
            window_tokens += tokens[i]
            if window_tokens < WINDOW_BUDGETS * max_tokens:
                continue
        if seed is not None:
            window.sort(key=lambda r: -tokens[r])
        batches += _fill(window, tokens, max_tokens)
        window, window_tokens = [], 0
    return batches


def _fill(rows: list[int], tokens: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Consecutive ``rows`` grouped greedily into batches of at most ``max_tokens`` tokens."""
    batches, current, used = [], [], 0
    for row in rows:
        if current and used + tokens[row] > max_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(row)
        used += tokens[row]
    return batches + ([current] if current else [])


class TokenBudgetSampler(ResumableSampler):
    """This rank's batches (lists of row indices) under a token budget, resumable mid-epoch.

    A :class:`~lit_align.data.sampler.ResumableSampler` whose items are whole batches (use it
    with ``batch_size=None``), so :class:`~lit_align.data.sampler.ResumableLoader` resumes it
    and Lightning, seeing a ``DistributedSampler``, leaves it in place.

    Args:
        tokens: tokens of each row (:func:`row_tokens`).
        max_tokens: the budget (``--data.max_tokens_per_batch``).
        shuffle: shuffle the composition once and the batch order every epoch.
        seed: seed of both shuffles.
        num_replicas: world size; default from ``torch.distributed``.
        rank: this rank; default from ``torch.distributed``.

    Raises:
        ValueError: a row alone exceeds the budget.
    """

    def __init__(
        self,
        tokens: Sequence[int],
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(len(tokens), 1, None, shuffle, seed, num_replicas, rank)
        longest = max(tokens)
        if longest > max_tokens:
            raise ValueError(
                f"--data.max_tokens_per_batch={max_tokens} is smaller than the longest row's "
                f"{longest} tokens (a pair counts its prompt twice); raise it"
            )
        self.max_tokens = max_tokens
        self.batches = compose(tokens, max_tokens, seed if shuffle else None)
        self.per_rank = -(-len(self.batches) // self.num_replicas)

    def __len__(self) -> int:
        return self.per_rank

    def order(self) -> list[list[int]]:
        """This rank's batches for the current epoch."""
        batches = self.batches
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        total = self.per_rank * self.num_replicas
        batches = (batches * -(-total // len(batches)))[:total]  # repeat to fill every rank
        return batches[self.rank :: self.num_replicas]


def row_dicts(data: datasets.Dataset, index: list[int]) -> list[dict[str, Any]]:
    """Rows ``index`` of ``data`` as dicts, read in one columnar access."""
    columns = data[index]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def packed_loader(
    rows: torch.utils.data.Dataset, collator: PreferenceCollator, settings: Any, shuffle: bool
) -> ResumableLoader:
    """A resumable loader of :class:`PackedBatch` es under a token budget.

    Args:
        rows: row dicts, ``rows[[i, j, ...]]`` giving several; the tokenised split is
            ``rows.data`` (see :class:`~lit_align.data.reference_columns.RowsWithReference`).
        collator: pads the rows of a batch (the padded view).
        settings: the data module's ``hparams``: ``max_tokens_per_batch``, ``seed``,
            ``num_workers``.
        shuffle: shuffle (training) or keep the order (validation).
    """
    tokens = row_tokens(rows.data, collator.kl_rows)
    budget, seed = settings.max_tokens_per_batch, settings.seed
    return ResumableLoader(
        rows,
        batch_size=None,
        sampler=TokenBudgetSampler(tokens, budget, shuffle=shuffle, seed=seed),
        collate_fn=PackingCollator(collator),
        num_workers=settings.num_workers,
    )
