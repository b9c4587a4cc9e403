"""Row normalisation and validation: every supported format becomes one canonical paired row.

Canonical row: ``{"prompt": str, "chosen": str, "rejected": str}`` (plus ``score_chosen`` and
``score_rejected`` floats when the data has them), where ``prompt`` is the fully rendered prompt
(chat template applied, generation prompt included) and the responses are the text that follows it.

Formats:

* ``paired`` — ``{"prompt": "2+2=", "chosen": "4", "rejected": "5"}``.
* ``conversational`` — messages as lists of ``{"role", "content"}``, rendered with the tokenizer's
  chat template. Either the prompt holds the conversation so far and ``chosen``/``rejected`` hold
  the assistant turn (``{"prompt": [{"role": "user", "content": "2+2="}], "chosen":
  [{"role": "assistant", "content": "4"}], ...}``), or, as in
  ``HuggingFaceH4/ultrafeedback_binarized``, ``chosen``/``rejected`` hold the whole
  conversation ending with the assistant turn.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedTokenizerBase

FORMATS = ("paired", "conversational")
SCORE_FIELDS = ("score_chosen", "score_rejected")


class DataError(ValueError):
    """Bad input data; the message names the source, split, row index and field."""


class RowContext:
    """Where a row came from, for error messages: ``source 'x', split 'train', row 3``."""

    def __init__(self, source: str, split: str, index: int) -> None:
        self.source, self.split, self.index = source, split, index

    def error(self, field: str, problem: str) -> DataError:
        where = f"{self.source!r}, split {self.split!r}, row {self.index}"
        return DataError(f"{where}, field {field!r}: {problem}")


def detect_format(row: dict[str, Any]) -> str:
    """``conversational`` if ``chosen`` is a list of messages, else ``paired``."""
    return "conversational" if isinstance(row.get("chosen"), list) else "paired"


def normalize_row(
    row: dict[str, Any],
    fmt: str,
    ctx: RowContext,
    tokenizer: PreTrainedTokenizerBase,
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """Validate ``row`` in format ``fmt`` and return the canonical paired row."""
    for name in ("prompt", "chosen", "rejected"):
        if name not in row or row[name] is None:
            raise ctx.error(name, f"missing (the row has fields {sorted(row)})")
    if fmt == "paired":
        out = {name: _text(row, name, ctx) for name in ("prompt", "chosen", "rejected")}
        if system_prompt:
            out["prompt"] = f"{system_prompt}\n{out['prompt']}"
    elif fmt == "conversational":
        out = _render_conversation(row, ctx, tokenizer, system_prompt)
    else:
        raise ValueError(f"--data.format must be one of {('auto', *FORMATS)}, got {fmt!r}")
    if out["chosen"] == out["rejected"]:
        raise ctx.error("rejected", "identical to 'chosen'; a pair needs two different responses")
    out.update(_scores(row, ctx))
    return out


def _text(row: dict[str, Any], name: str, ctx: RowContext) -> str:
    value = row[name]
    if not isinstance(value, str):
        raise ctx.error(name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise ctx.error(name, "empty prompt" if name == "prompt" else "empty response")
    return value


def _scores(row: dict[str, Any], ctx: RowContext) -> dict[str, float]:
    present = [name for name in SCORE_FIELDS if row.get(name) is not None]
    if not present:
        return {}
    if len(present) == 1:
        missing = next(name for name in SCORE_FIELDS if name not in present)
        raise ctx.error(missing, f"missing while {present[0]!r} is present")
    scores = {}
    for name in SCORE_FIELDS:
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(name, f"expected a number, got {type(value).__name__}")
        scores[name] = float(value)
    return scores


def _messages(row: dict[str, Any], name: str, ctx: RowContext) -> list[dict[str, str]]:
    value = row[name]
    if isinstance(value, str) and name == "prompt":
        return [{"role": "user", "content": _text(row, name, ctx)}]
    if not isinstance(value, list) or not value:
        raise ctx.error(name, f"expected a non-empty list of messages, got {type(value).__name__}")
    for i, msg in enumerate(value):
        ok = isinstance(msg, dict) and isinstance(msg.get("role"), str)
        if not ok or not isinstance(msg.get("content"), str):
            raise ctx.error(name, f"message {i} is not a {{'role': str, 'content': str}} dict")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _split_conversation(row: dict[str, Any], ctx: RowContext):
    """(prompt messages, chosen messages, rejected messages) of a conversational row."""
    chosen, rejected = _messages(row, "chosen", ctx), _messages(row, "rejected", ctx)
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        if msgs[-1]["role"] != "assistant":
            raise ctx.error(name, "the conversation does not end with an assistant turn")
    if chosen[0]["role"] == "assistant":
        return _messages(row, "prompt", ctx), chosen, rejected
    # Whole conversations (UltraFeedback style): the shared history is the prompt.
    if chosen[:-1] != rejected[:-1]:
        raise ctx.error("rejected", "its conversation history differs from 'chosen'")
    return chosen[:-1], chosen[-1:], rejected[-1:]


def _render_conversation(row, ctx, tokenizer, system_prompt):
    prompt_msgs, chosen_msgs, rejected_msgs = _split_conversation(row, ctx)
    if system_prompt and prompt_msgs[0]["role"] != "system":
        prompt_msgs = [{"role": "system", "content": system_prompt}, *prompt_msgs]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ctx.error("prompt", "conversational data needs a tokenizer with a chat template")
    prompt = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    out = {"prompt": prompt}
    for name, msgs in (("chosen", chosen_msgs), ("rejected", rejected_msgs)):
        full = tokenizer.apply_chat_template(prompt_msgs + msgs, tokenize=False)
        if not full.startswith(prompt):
            raise ctx.error(name, "the chat template does not render the prompt as a prefix")
        out[name] = full[len(prompt) :]
        if not msgs[-1]["content"].strip():
            raise ctx.error(name, "empty response")
    return out
