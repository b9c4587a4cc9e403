"""Tokenisation of canonical rows and the padding collator that builds a PreferenceBatch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from lit_align.types import PreferenceBatch, SequenceLogps

RESPONSE_FIELDS = ("chosen", "rejected", "completion")
REF_SUM = "ref_{}_logp"
"""Column of a response's precomputed reference log-prob sum (see :mod:`lit_align.reference`)."""
REF_TOKENS = "ref_{}_token_logps"
"""Column of its per-token reference log-probs, one per response token (position 0: 0)."""
PromptSide = Literal["keep_end", "keep_start"]
Policy = Literal["truncate", "drop"]


@dataclass(frozen=True)
class Truncation:
    """How a row is fitted into ``max_length`` tokens (prompt + one response, eos included).

    ``policy="truncate"`` (``--data.truncation truncate``):

    1. a prompt longer than ``max_prompt_length`` (when set) is cut to it;
    2. if prompt + longest response still exceed ``max_length``, the prompt is cut further, to
       what leaves room for that response but never below ``prompt_limit`` tokens;
    3. each response is cut to the room left, keeping its start (a cut response has no eos).

    The prompt keeps its end (``prompt_side="keep_end"``: the tokens nearest the response) or its
    start (``"keep_start"``); its leading special tokens (e.g. BOS) are kept either way.

    ``policy="drop"`` (``--data.truncation drop``): a row that would need any cut is dropped
    instead. Both counts are shown in the start-up summary.
    """

    max_length: int = 1024
    max_prompt_length: int | None = None
    prompt_side: PromptSide = "keep_end"
    policy: Policy = "truncate"

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"--data.max_length must be >= 2, got {self.max_length}")
        limit = self.prompt_limit
        if not 1 <= limit < self.max_length:
            raise ValueError(
                f"--data.max_prompt_length must be in [1, max_length), got {limit} "
                f"with max_length={self.max_length}"
            )
        if self.prompt_side not in ("keep_end", "keep_start"):
            raise ValueError(
                f"--data.prompt_truncation must be keep_end or keep_start, got {self.prompt_side!r}"
            )
        if self.policy not in ("truncate", "drop"):
            raise ValueError(f"--data.truncation must be truncate or drop, got {self.policy!r}")

    @property
    def prompt_limit(self) -> int:
        """Prompt budget when a row is too long: ``max_prompt_length``, else ``max_length // 2``."""
        return self.max_prompt_length or self.max_length // 2

    def prompt_keep(self, prompt_len: int, longest_response: int) -> int:
        """Prompt tokens kept by the ``truncate`` policy (steps 1 and 2)."""
        keep = min(prompt_len, self.max_prompt_length or prompt_len)
        if keep + longest_response > self.max_length:
            keep = min(keep, max(self.max_length - longest_response, self.prompt_limit))
        return keep


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special tokens the tokenizer puts before a text (e.g. ``[bos]``); often empty."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start]
    return []


def tokenize_row(
    row: dict[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    trunc: Truncation,
    prefix: list[int] | tuple[int, ...] = (),
) -> dict[str, Any]:
    """Token ids of a canonical (paired or unpaired) row, fitted by ``trunc``.

    Prompt and responses are tokenised separately, as the model sees them at generation time,
    so the boundary between them is exact whatever the tokenizer would merge across it. The
    prompt starts with ``prefix`` (see :func:`special_prefix`) unless it already does (chat
    templates often render BOS themselves); each response ends with exactly one eos (see
    :func:`response_ids`). Returns ``prompt_ids``, ``<response>_ids`` per response field,
    ``prompt_length`` (prompt tokens before any cut), ``truncated``, ``dropped``, ``length``
    (prompt + longest response, for length grouping), and the scores or label carried through
    (scores None when the row has none).
    """
    prefix = list(prefix)
    body = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    if prefix and body[: len(prefix)] == prefix:
        body = body[len(prefix) :]
    names = [name for name in RESPONSE_FIELDS if name in row]
    responses = [response_ids(row[name], tokenizer) for name in names]
    longest = max(len(r) for r in responses)
    keep = max(trunc.prompt_keep(len(prefix) + len(body), longest) - len(prefix), 0)
    prompt = prefix + (body[len(body) - keep :] if trunc.prompt_side == "keep_end" else body[:keep])
    room = trunc.max_length - len(prompt)
    truncated = len(prompt) < len(prefix) + len(body) or longest > room
    out = {f"{name}_ids": ids[:room] for name, ids in zip(names, responses)}
    out.update(
        prompt_ids=prompt,
        prompt_length=len(prefix) + len(body),
        truncated=truncated,
        dropped=truncated and trunc.policy == "drop",
        length=len(prompt) + min(longest, room),
    )
    if "label" in row:
        return {**out, "label": row["label"]}
    return {**out, **{name: row.get(name) for name in ("score_chosen", "score_rejected")}}


def response_ids(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a response, ending with exactly one eos.

    A chat template whose end-of-turn token is the eos (ChatML's ``<|im_end|>``: SmolLM2,
    Qwen2.5) has already closed the turn: the response then ends at that eos, and what the
    template writes after it (a newline) is dropped, since generation stops at the eos. Any
    other response (plain text, or a template closing its turns with another token) gets the
    eos appended.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos in ids:
        end = len(ids) - ids[::-1].index(eos)  # just after the last eos
        if not tokenizer.decode(ids[end:]).strip():
            return ids[:end]
    return ids + [eos]


class PreferenceCollator:
    """Pads tokenised rows into a :class:`PreferenceBatch`.

    Paired rows give ``2B`` sequences, the ``B`` chosen first, then the ``B`` rejected. Unpaired
    rows give ``N`` sequences with ``labels``; with ``kl_rows`` they are followed by ``N`` more,
    completion ``i`` under the prompt of row ``(i + 1) mod N`` of the same batch (the mismatched
    pairs of KTO's KL estimate; a batch of one row can only pair a completion with its own
    prompt), each cut to ``max_length`` keeping the completion's start.

    Rows carrying precomputed reference log-probs (:data:`REF_SUM`, :data:`REF_TOKENS`) give a
    batch with ``reference_logps`` in the same row layout.

    Args:
        pad_token_id: id written into padding positions (masked everywhere).
        kl_rows: append the mismatched rows to unpaired batches.
        max_length: longest sequence allowed for a mismatched row (required with ``kl_rows``).
    """

    def __init__(
        self, pad_token_id: int, kl_rows: bool = False, max_length: int | None = None
    ) -> None:
        if kl_rows and max_length is None:
            raise ValueError("PreferenceCollator: kl_rows needs max_length")
        self.pad_token_id, self.kl_rows, self.max_length = pad_token_id, kl_rows, max_length

    def __call__(self, rows: list[dict[str, Any]]) -> PreferenceBatch:
        if "completion_ids" in rows[0]:
            return self._unpaired(rows)
        seqs = [(r["prompt_ids"], r["chosen_ids"]) for r in rows]
        seqs += [(r["prompt_ids"], r["rejected_ids"]) for r in rows]
        input_ids, attention, response = self._pad(seqs)  # (2B, T) each
        return PreferenceBatch(
            input_ids,
            attention,
            response,
            score_chosen=_scores(rows, "score_chosen"),  # (B,)
            score_rejected=_scores(rows, "score_rejected"),
            reference_logps=_reference(rows, ("chosen", "rejected"), response),
        )

    def _unpaired(self, rows: list[dict[str, Any]]) -> PreferenceBatch:
        seqs = [(r["prompt_ids"], r["completion_ids"]) for r in rows]
        if self.kl_rows:
            n = len(rows)
            for i, row in enumerate(rows):
                prompt = rows[(i + 1) % n]["prompt_ids"]
                seqs.append((prompt, row["completion_ids"][: self.max_length - len(prompt)]))
        labels = torch.tensor([bool(r["label"]) for r in rows], dtype=torch.bool)  # (N,)
        input_ids, attention, response = self._pad(seqs)  # (N, T) or (2N, T)
        reference = None if self.kl_rows else _reference(rows, ("completion",), response)
        return PreferenceBatch(input_ids, attention, response, labels, reference_logps=reference)

    def _pad(self, seqs: list[tuple[list[int], list[int]]]):
        """(input_ids, attention_mask, response_mask), each ``(len(seqs), T)``, right-padded."""
        width = max(len(p) + len(c) for p, c in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        response = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (prompt, resp) in enumerate(seqs):
            n_p, n = len(prompt), len(prompt) + len(resp)
            input_ids[i, :n] = torch.tensor(prompt + resp, dtype=torch.long)
            attention[i, :n] = 1
            response[i, n_p:n] = True
        return input_ids, attention, response


def _scores(rows: list[dict[str, Any]], name: str) -> torch.Tensor | None:
    if any(r.get(name) is None for r in rows):
        return None
    return torch.tensor([float(r[name]) for r in rows], dtype=torch.float32)


def _reference(
    rows: list[dict[str, Any]], fields: tuple[str, ...], response: torch.Tensor
) -> SequenceLogps | None:
    """Precomputed reference log-probs of the sequences (``fields`` outer, rows inner), if any.

    Per-token values fill the response positions of each row in order, as
    :class:`~lit_align.types.SequenceLogps` lays them out; ``response`` is ``(N, T)``.
    """
    if REF_SUM.format(fields[0]) not in rows[0]:
        return None
    sums = [r[REF_SUM.format(f)] for f in fields for r in rows]
    tokens = None
    if REF_TOKENS.format(fields[0]) in rows[0]:
        values = [v for f in fields for r in rows for v in r[REF_TOKENS.format(f)]]
        tokens = torch.zeros(response.shape, dtype=torch.float32)  # (N, T)
        tokens[response] = torch.tensor(values, dtype=torch.float32)
    return SequenceLogps(
        sum=torch.tensor(sums, dtype=torch.float32),  # (N,)
        count=response[:, 1:].sum(1, dtype=torch.float32),  # (N,), as the scorer counts
        token_logps=tokens,
    )
