"""Validation and tokenisation of one split with ``datasets.map``, cached by fingerprint.

The map's fingerprint (hence its cache file) is a hash of the raw data's fingerprint, the
tokenizer (vocabulary, normaliser, post-processor, special tokens, chat template), every
setting that shapes the rows (:class:`Encoding`) and the source code of the data pipeline, so
changing any of them re-tokenises and nothing stale is reused. Cache files go to
``--data.cache_dir`` (default: the ``datasets`` cache, under ``lit_align/``), never next to the
user's files (``datasets`` would write them into a ``save_to_disk`` folder); in-memory data
(the embedded task) is not cached.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets.fingerprint import Hasher
from transformers import PreTrainedTokenizerBase

from lit_align.data import collate, formats
from lit_align.data.collate import Truncation, special_prefix, tokenize_row
from lit_align.data.formats import (
    EMPTY,
    IDENTICAL,
    DataError,
    RowContext,
    flip,
    has_turn_marker,
    normalize_row,
    unpair,
)
from lit_align.data.sources import ROW_COLUMN

_IDS = datasets.List(datasets.Value("int32"))
_COMMON = {
    "prompt_ids": _IDS,
    "truncated": datasets.Value("bool"),
    "dropped": datasets.Value("bool"),
    "length": datasets.Value("int32"),
    "error": datasets.Value("string"),
    "error_kind": datasets.Value("string"),
    "prompt_length": datasets.Value("int32"),
    "turn_marker": datasets.Value("bool"),
}
STATS_ONLY = ["error", "error_kind", "dropped", "prompt_length", "turn_marker"]
"""Columns read by the start-up summary and removed before training."""
PAIRED_FEATURES = datasets.Features(
    {**_COMMON, "chosen_ids": _IDS, "rejected_ids": _IDS}
    | {name: datasets.Value("float64") for name in formats.SCORE_FIELDS}
)
UNPAIRED_FEATURES = datasets.Features(
    {**_COMMON, "completion_ids": _IDS, "label": datasets.Value("bool")}
)
SHOWN_ERRORS = 3


@dataclass(frozen=True)
class Encoding:
    """The settings that decide the tokenised rows of a split (all part of the fingerprint)."""

    source: str
    format: str
    truncation: Truncation
    system_prompt: str | None = None
    unpair: bool = False
    skip_bad_rows: bool = False
    label_noise: float = 0.0
    seed: int = 0

    @property
    def unpaired(self) -> bool:
        return self.unpair or formats.is_unpaired(self.format)


@dataclass
class SplitStats:
    """What happened to a split's rows, for the start-up summary and the logger.

    ``identical`` and ``empty`` break ``bad`` down (pairs whose responses are equal, rows with
    an empty response); ``ties``, ``scored``, ``turn_markers`` and ``over_prompt_limit`` count
    the kept rows: pairs with equal scores, pairs with scores, rows with a response holding a
    dialogue turn marker (:data:`~lit_align.data.formats.TURN_MARKERS`) and prompts longer than
    ``prompt_limit`` tokens before any cut.
    """

    rows: int
    unpaired: bool
    examples: int = 0
    bad: int = 0
    identical: int = 0
    empty: int = 0
    truncated: int = 0
    dropped: int = 0
    desirable: int = 0
    scored: int = 0
    ties: int = 0
    turn_markers: int = 0
    over_prompt_limit: int = 0
    prompt_limit: int = 0
    max_length: int = 0
    mean_length: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.examples - self.dropped

    def add_skipped_lines(self, lines: Sequence[str]) -> None:
        """Count malformed lines of the source, skipped while loading, as bad rows."""
        self.rows += len(lines)
        self.bad += len(lines)
        self.errors = [*lines, *self.errors]

    def describe(self, split: str) -> list[str]:
        """Summary lines, e.g. ``train: 8 pairs kept of 10 rows (1 bad skipped, ...)``.

        Tokens per row count the prompt and the longest response, after truncation.
        """
        unit = "examples" if self.unpaired else "pairs"
        parts = [f"{self.bad} bad skipped", f"{self.truncated} truncated"]
        parts.append(f"{self.dropped} dropped")
        if self.unpaired:
            parts.append(f"{self.desirable} desirable, {self.kept - self.desirable} undesirable")
        lines = [
            f"  {split}: {self.kept} {unit} kept of {self.rows} rows ({', '.join(parts)}); "
            f"tokens per row: mean {self.mean_length:.1f}, max {self.max_length}"
        ]
        if self.bad:
            other = self.bad - self.identical - self.empty
            lines.append(
                f"    bad: {self.identical} identical pairs (chosen == rejected), "
                f"{self.empty} empty responses, {other} other"
            )
        lines.append(f"    {self._checks()}")
        lines += [f"    skipped {msg}" for msg in self.errors[:SHOWN_ERRORS]]
        if self.bad > SHOWN_ERRORS:
            lines.append(f"    ... and {self.bad - SHOWN_ERRORS} more bad rows")
        return lines

    def _checks(self) -> str:
        """Scores found or not, ties, turn markers in responses, prompts over the limit."""
        if self.unpaired:
            scores = "scores: none (unpaired rows)"
        elif self.scored:
            scores = f"scores: found in {self.scored} of {self.kept} pairs, {self.ties} tied"
        else:
            scores = "scores: not found (no score_chosen/score_rejected columns)"
        return (
            f"{scores}; {self.turn_markers} with a turn marker in a response; "
            f"{self.over_prompt_limit} prompts longer than {self.prompt_limit} tokens"
        )


class Encoder:
    """The batched map function: normalise, flip (label noise), unpair, tokenise each row.

    Picklable, so ``num_proc`` workers can run it. A bad row raises :class:`DataError`, or
    with ``skip_bad_rows`` becomes one output row holding only the message in ``error``.
    """

    def __init__(
        self,
        enc: Encoding,
        split: str,
        tokenizer: PreTrainedTokenizerBase,
        flipped: frozenset[int] = frozenset(),
    ) -> None:
        self.enc, self.split, self.tokenizer, self.flipped = enc, split, tokenizer, flipped
        self.prefix = special_prefix(tokenizer)
        features = UNPAIRED_FEATURES if enc.unpaired else PAIRED_FEATURES
        self.empty = {name: [] if name.endswith("_ids") else None for name in features}

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {name: [] for name in self.empty}
        for index, values in zip(indices, zip(*batch.values())):
            for row in self.encode(dict(zip(batch, values)), index):
                for name in out:
                    out[name].append(row.get(name))
        return out

    def encode(self, row: dict[str, Any], index: int) -> list[dict[str, Any]]:
        """Output rows of raw row ``index``: one, two when unpairing, or one error row."""
        ctx = RowContext(self.enc.source, self.split, row.pop(ROW_COLUMN, index))
        try:
            canonical = normalize_row(
                row, self.enc.format, ctx, self.tokenizer, self.enc.system_prompt
            )
        except DataError as err:
            if not self.enc.skip_bad_rows:
                raise
            return [{**self.empty, "error": err.detail or str(err), "error_kind": err.kind}]
        canonical = flip(canonical) if index in self.flipped else canonical
        rows = unpair(canonical) if self.enc.unpair else [canonical]
        trunc, marker = self.enc.truncation, has_turn_marker(canonical)
        return [
            {**tokenize_row(r, self.tokenizer, trunc, self.prefix), "turn_marker": marker}
            for r in rows
        ]


def prepare_split(
    data: datasets.Dataset,
    split: str,
    enc: Encoding,
    tokenizer: PreTrainedTokenizerBase,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    source_split: str | None = None,
    skipped_lines: Sequence[str] = (),
) -> tuple[datasets.Dataset, SplitStats]:
    """Validate and tokenise ``data``; drop bad (when skipping) and dropped rows; count them.

    Args:
        data: raw rows.
        split: ``train`` or ``validation``.
        enc: the encoding settings.
        tokenizer: the tokenizer.
        num_proc: processes of ``datasets.map``.
        cache_dir: root of the tokenised cache (see the module docstring).
        source_split: the split of the source that messages name (default: ``split``).
        skipped_lines: messages of the source's malformed lines, already skipped while
            loading; counted as bad rows.
    """
    label = source_split or split
    if len(data) == 0:
        raise DataError(f"{enc.source!r}, split {label!r}: the dataset is empty")
    flipped = _flipped(len(data), enc.label_noise, enc.seed)
    fp = Hasher.hash(
        [data._fingerprint, split, label, tokenizer_fingerprint(tokenizer), enc, _code_hash()]
    )
    encoded = data.map(
        Encoder(enc, label, tokenizer, flipped),
        batched=True,
        with_indices=True,
        remove_columns=data.column_names,
        features=UNPAIRED_FEATURES if enc.unpaired else PAIRED_FEATURES,
        num_proc=num_proc,
        new_fingerprint=fp,
        cache_file_name=_cache_file(data, cache_dir, split, fp),
        desc=f"tokenizing {split}",
    )
    stats, keep = _count(encoded, len(data), enc)
    stats.add_skipped_lines(skipped_lines)
    if not keep:
        first = f" (first: {stats.errors[0]})" if stats.errors else ""
        raise DataError(
            f"{enc.source!r}, split {label!r}: no row left of {stats.rows} "
            f"({stats.bad} bad, {stats.dropped} dropped by --data.truncation drop){first}"
        )
    kept = encoded if len(keep) == len(encoded) else encoded.select(keep)
    return kept.remove_columns(STATS_ONLY), stats


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything in the tokenizer that changes token ids or rendered prompts."""
    if getattr(tokenizer, "is_fast", False):
        vocab: Any = tokenizer.backend_tokenizer.to_str()
    else:
        vocab = sorted(tokenizer.get_vocab().items())
    specials = [tokenizer.eos_token_id, tokenizer.pad_token_id, special_prefix(tokenizer)]
    return Hasher.hash([type(tokenizer).__name__, vocab, tokenizer.chat_template, specials])


def _count(encoded: datasets.Dataset, rows: int, enc: Encoding) -> tuple[SplitStats, list[int]]:
    """The split's statistics and the indices of the rows kept (not bad, not dropped)."""
    names = ["error", "error_kind", "truncated", "dropped", "length", "prompt_length"]
    names += ["turn_marker"] + (["label"] if enc.unpaired else list(formats.SCORE_FIELDS))
    cols = encoded.select_columns(names).to_dict()
    limit = enc.truncation.prompt_limit
    stats = SplitStats(rows=rows, unpaired=enc.unpaired, prompt_limit=limit)
    stats.errors = [e for e in cols["error"] if e is not None]
    stats.bad = len(stats.errors)
    stats.identical = cols["error_kind"].count(IDENTICAL)
    stats.empty = cols["error_kind"].count(EMPTY)
    good = [i for i, e in enumerate(cols["error"]) if e is None]
    keep = [i for i in good if not cols["dropped"][i]]
    stats.examples = len(good)
    stats.truncated = sum(cols["truncated"][i] for i in good)
    stats.dropped = len(good) - len(keep)
    lengths = [cols["length"][i] for i in keep]
    stats.max_length = max(lengths, default=0)
    stats.mean_length = sum(lengths) / max(len(lengths), 1)
    stats.turn_markers = sum(cols["turn_marker"][i] for i in keep)
    stats.over_prompt_limit = sum(cols["prompt_length"][i] > limit for i in keep)
    if enc.unpaired:
        stats.desirable = sum(cols["label"][i] for i in keep)
    else:
        scores = [(cols["score_chosen"][i], cols["score_rejected"][i]) for i in keep]
        scores = [(c, r) for c, r in scores if c is not None]
        stats.scored, stats.ties = len(scores), sum(c == r for c, r in scores)
    return stats, keep


def _flipped(rows: int, fraction: float, seed: int) -> frozenset[int]:
    """The seeded ``round(fraction * rows)`` row indices whose preference is inverted."""
    return frozenset(random.Random(seed).sample(range(rows), round(fraction * rows)))


def _cache_file(data: datasets.Dataset, cache_dir: str | None, split: str, fp: str) -> str | None:
    if not data.cache_files:
        return None  # in-memory data: keep the result in memory too
    root = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "lit_align"
    os.makedirs(root, exist_ok=True)
    return str(root / f"{split}-{fp}.arrow")


def _code_hash() -> str:
    """Hash of the pipeline's source: a change to the normalisation code invalidates caches."""
    files = (formats.__file__, collate.__file__, __file__)
    return Hasher.hash([Path(f).read_bytes() for f in files])
