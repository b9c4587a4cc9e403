"""Row formats: detection, validation, and normalisation to one canonical row per example.

Canonical rows (what tokenisation sees):

* paired: ``{"prompt": str, "chosen": str, "rejected": str}``, plus ``score_chosen`` and
  ``score_rejected`` floats when the data has them;
* unpaired: ``{"prompt": str, "completion": str, "label": bool}`` (True = desirable).

``prompt`` is the fully rendered prompt (chat template applied, generation prompt included) and
the responses are the text that follows it.

Formats (``--data.format``; ``auto`` detects them, see :func:`detect_format`):

* ``paired`` — ``{"prompt": "2+2=", "chosen": "4", "rejected": "5"}``, optionally with
  ``"score_chosen": 9.0, "score_rejected": 2.0``. ``--data.system_prompt`` is prepended to the
  prompt with a newline.
* ``conversational`` — messages (lists of ``{"role", "content"}``) rendered with the tokenizer's
  chat template. Either ``prompt`` holds the conversation so far and ``chosen``/``rejected`` the
  assistant turn: ``{"prompt": [{"role": "user", "content": "2+2="}], "chosen": [{"role":
  "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}`` (a plain
  string response counts as one assistant turn), or, as in
  ``HuggingFaceH4/ultrafeedback_binarized``, ``chosen``/``rejected`` hold whole conversations
  ending with the assistant turn and sharing the history before it (``prompt`` is then not
  needed). ``--data.system_prompt`` becomes a system message unless the conversation has one.
* ``implicit_prompt`` — Anthropic HH-RLHF: ``{"chosen": "\\n\\nHuman: 2+2?\\n\\nAssistant: 4",
  "rejected": "\\n\\nHuman: 2+2?\\n\\nAssistant: 5"}``. The prompt is the longest common prefix
  of the two dialogues cut just after its last ``"\\n\\nAssistant:"`` marker; each response is
  the rest of its dialogue (here ``" 4"`` and ``" 5"``).
* ``unpaired`` — for KTO/BCO/BNF: ``{"prompt": "2+2=", "completion": "4", "label": true}``;
  ``label`` must be a real boolean (not 0/1 or "yes"). ``prompt`` and ``completion`` may be
  messages, rendered as in ``conversational``.

Every error is a :class:`DataError` naming the source, split, row index and field.
"""

from __future__ import annotations

import math
import os
from typing import Any

from transformers import PreTrainedTokenizerBase

FORMATS = ("paired", "conversational", "implicit_prompt", "unpaired")
SCORE_FIELDS = ("score_chosen", "score_rejected")
CANONICAL_FIELDS = ("prompt", "chosen", "rejected", "completion", "label", *SCORE_FIELDS)
HH_ASSISTANT = "\n\nAssistant:"
TURN_MARKERS = (
    "\n\nHuman:",
    HH_ASSISTANT,
    "<|im_start|>",  # ChatML (SmolLM2, Qwen)
    "<|start_header_id|>",  # Llama 3
    "<start_of_turn>",  # Gemma
    "[INST]",  # Llama 2, Mistral
)
"""Strings that open a dialogue turn; a response holding one runs on into another turn."""
EMPTY = "empty response"
IDENTICAL = "identical pair"
_REQUIRED = {
    "paired": ("prompt", "chosen", "rejected"),
    "conversational": ("chosen", "rejected"),
    "implicit_prompt": ("chosen", "rejected"),
    "unpaired": ("prompt", "completion", "label"),
}


SKIP_HINT = "pass --data.on_bad_rows skip to skip (and count) bad rows"
"""The end of an error about a bad row or line, which that flag would skip."""


class DataError(ValueError):
    """Bad input data; the message names the source, split, row index and field.

    Attributes:
        detail: for a bad row, the message without the source and split
            (``row 3, field 'label': ...``), as the start-up summary lists skipped rows.
        kind: what the start-up summary counts it as: :data:`EMPTY`, :data:`IDENTICAL`, or
            ``malformed`` (anything else).
    """

    detail: str = ""
    kind: str = "malformed"


class RowContext:
    """Where a row came from, for error messages: ``source 'x', split 'train', row 3``."""

    def __init__(self, source: str, split: str, index: int) -> None:
        self.source, self.split, self.index = source, split, index

    def error(self, field: str, problem: str, kind: str = "malformed") -> DataError:
        detail = f"row {self.index}, field {field!r}: {problem}"
        err = DataError(f"{self.source!r}, split {self.split!r}, {detail}")
        err.detail, err.kind = detail, kind
        return err


def detect_format(columns: list[str], first_row: dict[str, Any], where: str) -> str:
    """The format of a dataset from its column names and the value types of its first row.

    ``unpaired`` when it has ``completion`` and ``label``; otherwise, with ``chosen`` and
    ``rejected``: ``conversational`` when ``chosen`` or ``prompt`` holds messages,
    ``implicit_prompt`` when there is no ``prompt`` column, else ``paired``.
    """
    cols = set(columns)
    if {"completion", "label"} <= cols:
        return "unpaired"
    if {"chosen", "rejected"} <= cols:
        if any(isinstance(first_row.get(name), list) for name in ("chosen", "prompt")):
            return "conversational"
        return "paired" if "prompt" in cols else "implicit_prompt"
    raise DataError(
        f"{where}: cannot detect the format from columns {sorted(cols)}; expected "
        "prompt/chosen/rejected, chosen/rejected or prompt/completion/label. Map your columns "
        "with --data.columns '{prompt: question, chosen: good, rejected: bad}' or set "
        f"--data.format to one of {FORMATS}"
    )


def is_unpaired(fmt: str) -> bool:
    """Whether rows of format ``fmt`` are unpaired (one completion with a label)."""
    return fmt == "unpaired"


def normalize_row(
    row: dict[str, Any],
    fmt: str,
    ctx: RowContext,
    tokenizer: PreTrainedTokenizerBase,
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """Validate ``row`` in format ``fmt`` and return its canonical (paired or unpaired) row."""
    if fmt not in _REQUIRED:
        raise ValueError(f"--data.format must be one of {('auto', *FORMATS)}, got {fmt!r}")
    for name in _REQUIRED[fmt]:
        if row.get(name) is None:
            raise _missing(row, name, ctx)
    if fmt == "unpaired":
        return _unpaired(row, ctx, tokenizer, system_prompt)
    if fmt == "conversational":
        out = _render(row, ctx, tokenizer, system_prompt, ("chosen", "rejected"))
    elif fmt == "implicit_prompt":
        out = _split_implicit(row, ctx)
    else:
        out = {name: text(row, name, ctx) for name in ("prompt", "chosen", "rejected")}
        out["prompt"] = f"{system_prompt}\n{out['prompt']}" if system_prompt else out["prompt"]
    if out["chosen"] == out["rejected"]:
        raise ctx.error(
            "rejected", "identical to 'chosen'; a pair needs two different responses", IDENTICAL
        )
    return {**out, **_scores(row, ctx)}


def has_turn_marker(row: dict[str, Any]) -> bool:
    """Whether a response of canonical ``row`` holds one of :data:`TURN_MARKERS`."""
    responses = [row[name] for name in ("chosen", "rejected", "completion") if name in row]
    return any(marker in text for text in responses for marker in TURN_MARKERS)


def unpair(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A canonical pair as two unpaired rows: chosen desirable, rejected undesirable."""
    return [
        {"prompt": row["prompt"], "completion": row["chosen"], "label": True},
        {"prompt": row["prompt"], "completion": row["rejected"], "label": False},
    ]


def flip(row: dict[str, Any]) -> dict[str, Any]:
    """A canonical row with its preference inverted (label noise): responses and scores swapped
    for a pair, the label negated for an unpaired row."""
    if "label" in row:
        return {**row, "label": not row["label"]}
    swapped = {**row, "chosen": row["rejected"], "rejected": row["chosen"]}
    if "score_chosen" in row:
        swapped.update(score_chosen=row["score_rejected"], score_rejected=row["score_chosen"])
    return swapped


def text(row: dict[str, Any], name: str, ctx: RowContext) -> str:
    """The non-empty string in field ``name`` (Arrow has already checked it is valid UTF-8)."""
    value = row[name]
    if not isinstance(value, str):
        hint = " (messages: use --data.format conversational)" if isinstance(value, list) else ""
        raise ctx.error(name, f"expected a string, got {type(value).__name__}{hint}")
    if not value.strip():
        if name == "prompt":
            raise ctx.error(name, "empty prompt")
        raise ctx.error(name, EMPTY, EMPTY)
    return value


def _missing(row: dict[str, Any], name: str, ctx: RowContext) -> DataError:
    present = sorted(key for key, value in row.items() if value is not None)
    return ctx.error(name, f"missing or null (the row has {present})")


def _scores(row: dict[str, Any], ctx: RowContext) -> dict[str, float]:
    present = [name for name in SCORE_FIELDS if row.get(name) is not None]
    if not present:
        return {}
    if len(present) == 1:
        missing = next(name for name in SCORE_FIELDS if name not in present)
        raise ctx.error(missing, f"missing while {present[0]!r} is present")
    for name in SCORE_FIELDS:
        if isinstance(row[name], bool) or not isinstance(row[name], (int, float)):
            raise ctx.error(name, f"expected a number, got {type(row[name]).__name__}")
        if not math.isfinite(row[name]):  # NaN passes every comparison, inf zeroes losses
            raise ctx.error(name, f"expected a finite number, got {row[name]!r}")
    return {name: float(row[name]) for name in SCORE_FIELDS}


def _unpaired(row, ctx, tokenizer, system_prompt) -> dict[str, Any]:
    label = row["label"]
    if not isinstance(label, bool):
        raise ctx.error(
            "label", f"expected a boolean (true/false), got {type(label).__name__} {label!r}"
        )
    if any(isinstance(row[name], list) for name in ("prompt", "completion")):
        out = _render(row, ctx, tokenizer, system_prompt, ("completion",))
    else:
        out = {name: text(row, name, ctx) for name in ("prompt", "completion")}
        out["prompt"] = f"{system_prompt}\n{out['prompt']}" if system_prompt else out["prompt"]
    return {**out, "label": label}


def _split_implicit(row: dict[str, Any], ctx: RowContext) -> dict[str, str]:
    chosen, rejected = text(row, "chosen", ctx), text(row, "rejected", ctx)
    cut = os.path.commonprefix([chosen, rejected]).rfind(HH_ASSISTANT)
    if cut < 0:
        raise ctx.error(
            "chosen",
            f"no shared {HH_ASSISTANT!r} turn marker: implicit-prompt rows need two dialogues "
            "that share the conversation up to the last assistant turn",
        )
    end = cut + len(HH_ASSISTANT)
    out = {"prompt": chosen[:end], "chosen": chosen[end:], "rejected": rejected[end:]}
    for name in ("chosen", "rejected"):
        if not out[name].strip():
            raise ctx.error(name, "empty response after the last assistant turn marker", EMPTY)
    return out


def _messages(value: Any, name: str, ctx: RowContext) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ctx.error(name, f"expected a non-empty list of messages, got {type(value).__name__}")
    for i, msg in enumerate(value):
        ok = isinstance(msg, dict) and isinstance(msg.get("role"), str)
        if not ok or not isinstance(msg.get("content"), str):
            raise ctx.error(name, f"message {i} is not a {{'role': str, 'content': str}} dict")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _turn(row: dict[str, Any], name: str, ctx: RowContext) -> list[dict[str, str]]:
    """Messages of a response field; a plain string is one assistant turn."""
    if isinstance(row[name], str):
        return [{"role": "assistant", "content": text(row, name, ctx)}]
    msgs = _messages(row[name], name, ctx)
    if msgs[-1]["role"] != "assistant":
        raise ctx.error(name, "the conversation does not end with an assistant turn")
    if not msgs[-1]["content"].strip():
        raise ctx.error(name, EMPTY, EMPTY)
    return msgs


def _prompt_messages(row, ctx, responses):
    """(prompt messages, {name: response messages}) of a conversational row."""
    turns = {name: _turn(row, name, ctx) for name in responses}
    if all(msgs[0]["role"] == "assistant" for msgs in turns.values()):
        if row.get("prompt") is None:
            raise _missing(row, "prompt", ctx)
        if isinstance(row["prompt"], str):
            return [{"role": "user", "content": text(row, "prompt", ctx)}], turns
        return _messages(row["prompt"], "prompt", ctx), turns
    # Whole conversations (UltraFeedback style): the shared history is the prompt.
    first, *others = responses
    history = turns[first][:-1]
    for name in others:
        if turns[name][:-1] != history:
            raise ctx.error(name, f"its conversation history differs from {first!r}")
    if not history:
        raise ctx.error(first, "a whole conversation needs at least one turn before the answer")
    return history, {name: msgs[-1:] for name, msgs in turns.items()}


def _render(row, ctx, tokenizer, system_prompt, responses) -> dict[str, str]:
    prompt_msgs, turns = _prompt_messages(row, ctx, responses)
    if system_prompt and prompt_msgs[0]["role"] != "system":
        prompt_msgs = [{"role": "system", "content": system_prompt}, *prompt_msgs]
    if getattr(tokenizer, "chat_template", None) is None:
        raise ctx.error("prompt", "messages need a tokenizer with a chat template")
    prompt = tokenizer.apply_chat_template(prompt_msgs, tokenize=False, add_generation_prompt=True)
    out = {"prompt": prompt}
    for name, msgs in turns.items():
        full = tokenizer.apply_chat_template(prompt_msgs + msgs, tokenize=False)
        if not full.startswith(prompt):
            raise ctx.error(name, "the chat template does not render the prompt as a prefix")
        out[name] = full[len(prompt) :]
    return out
