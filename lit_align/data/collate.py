"""Tokenisation of canonical rows and the padding collator that builds a PreferenceBatch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lit_align.types import PreferenceBatch


@dataclass(frozen=True)
class Truncation:
    """How rows are fitted into ``max_length`` tokens.

    The prompt keeps its end (the tokens nearest the response) and is cut to
    ``max_prompt_length``; each response keeps its start and is cut so that prompt + response
    fits in ``max_length``. The response always ends with the eos token unless it was cut.
    A row whose responses would keep fewer than ``min_response_tokens`` tokens is dropped.
    """

    max_length: int = 1024
    max_prompt_length: int | None = None
    min_response_tokens: int = 1

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ValueError(f"--data.max_length must be >= 2, got {self.max_length}")
        limit = self.prompt_limit
        if not 1 <= limit < self.max_length:
            raise ValueError(
                f"--data.max_prompt_length must be in [1, max_length), got {limit} "
                f"with max_length={self.max_length}"
            )

    @property
    def prompt_limit(self) -> int:
        """Prompt budget: ``max_prompt_length``, or half of ``max_length`` when unset."""
        return self.max_prompt_length or self.max_length // 2


def tokenize_row(
    row: dict[str, Any], tokenizer: PreTrainedTokenizerBase, trunc: Truncation
) -> dict[str, Any]:
    """Token ids of a canonical row, truncated; flags ``truncated`` and ``dropped``.

    Prompt and responses are tokenised separately and concatenated, so the boundary between
    them is exact whatever the tokenizer does across it. Scores are carried through (None when
    the row has none).
    """
    prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
    responses = [
        tokenizer(row[name], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        for name in ("chosen", "rejected")
    ]
    truncated = len(prompt) > trunc.prompt_limit
    prompt = prompt[-trunc.prompt_limit :]
    room = trunc.max_length - len(prompt)
    truncated = truncated or any(len(r) > room for r in responses)
    chosen, rejected = (r[:room] for r in responses)
    dropped = min(len(chosen), len(rejected)) < trunc.min_response_tokens
    return {
        "prompt_ids": prompt,
        "chosen_ids": chosen,
        "rejected_ids": rejected,
        "truncated": truncated,
        "dropped": dropped,
        "score_chosen": row.get("score_chosen"),
        "score_rejected": row.get("score_rejected"),
    }


class PreferenceCollator:
    """Pads tokenised pairs into a :class:`PreferenceBatch` (chosen rows first, then rejected).

    Args:
        pad_token_id: id written into padding positions (masked everywhere).
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> PreferenceBatch:
        seqs = [(r["prompt_ids"], r["chosen_ids"]) for r in rows]
        seqs += [(r["prompt_ids"], r["rejected_ids"]) for r in rows]
        width = max(len(p) + len(c) for p, c in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        response = torch.zeros((len(seqs), width), dtype=torch.bool)
        for i, (prompt, resp) in enumerate(seqs):
            n_p, n = len(prompt), len(prompt) + len(resp)
            input_ids[i, :n] = torch.tensor(prompt + resp, dtype=torch.long)
            attention[i, :n] = 1
            response[i, n_p:n] = True
        return PreferenceBatch(
            input_ids=input_ids,  # (2B, T)
            attention_mask=attention,
            response_mask=response,
            score_chosen=_scores(rows, "score_chosen"),
            score_rejected=_scores(rows, "score_rejected"),
        )


def _scores(rows: list[dict[str, Any]], name: str) -> torch.Tensor | None:
    if any(r.get(name) is None for r in rows):
        return None
    return torch.tensor([float(r[name]) for r in rows], dtype=torch.float32)
