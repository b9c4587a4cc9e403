"""Batched, seeded generation of responses to rendered prompts, and JSONL records of them.

Decoding options are transformers' :class:`~transformers.GenerationConfig` (every field: ``top_k``,
``repetition_penalty``, ``stop_strings``, ...); :func:`generation_config` builds one from the
``--generation`` options of the CLI or YAML and rejects names the class does not have.

Prompts are strings the caller has already rendered (chat template applied). They are tokenised
as in training: without the tokenizer's automatic special tokens, then prefixed with the special
tokens it would put first (e.g. bos) unless the rendered text already starts with them. Batches
are LEFT-padded so every row's next token follows its last prompt token; ``model.generate``
derives position ids from the attention mask, so a prompt gives the same greedy output alone or
beside a longer one (up to float rounding).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import BatchEncoding, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from lit_align.data.collate import special_prefix

GENERATION_DEFAULTS: dict[str, Any] = {"max_new_tokens": 64, "do_sample": False}
"""Options applied under the user's ``--generation`` ones (transformers' defaults otherwise)."""


def generation_config(options: dict[str, Any] | GenerationConfig | None) -> GenerationConfig:
    """A validated ``GenerationConfig`` from ``--generation`` options (or one given as is).

    Raises:
        ValueError: On an option ``GenerationConfig`` does not have, or values it rejects.
    """
    if isinstance(options, GenerationConfig):
        return options
    options = options or {}
    known = set(GenerationConfig().to_dict())
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"--generation: unknown option(s) {unknown}; any field of transformers."
            "GenerationConfig is allowed (e.g. max_new_tokens, do_sample, temperature, top_k, "
            "top_p, repetition_penalty, stop_strings)"
        )
    config = GenerationConfig(**{**GENERATION_DEFAULTS, **options})
    config.validate()
    return config


@contextmanager
def padding_side(tokenizer: PreTrainedTokenizerBase, side: str) -> Iterator[None]:
    """Temporarily set ``tokenizer.padding_side`` to ``side`` ("left" or "right").

    Raises:
        ValueError: If the tokenizer has no pad token (set ``tokenizer.pad_token``).
    """
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "tokenizer has no pad token; set tokenizer.pad_token (e.g. to tokenizer.eos_token)"
        )
    previous = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = previous


def encode_left_padded(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    device: torch.device | str,
    max_length: int | None = None,
) -> BatchEncoding:
    """Rendered texts as a left-padded batch on ``device``: ``input_ids``, ``attention_mask``
    of shape ``(B, T)``, each row starting with the tokenizer's special prefix exactly once.

    A row longer than ``max_length`` keeps its prefix and its last tokens (the end of the
    exchange, where a reward model reads its score), as training cuts a prompt's start.
    """
    prefix = special_prefix(tokenizer)
    rows = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        if prefix and ids[: len(prefix)] == prefix:
            ids = ids[len(prefix) :]
        if max_length is not None and len(prefix) + len(ids) > max_length:
            ids = ids[len(ids) - (max_length - len(prefix)) :]
        rows.append(prefix + ids)
    with padding_side(tokenizer, "left"):
        enc = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    return enc.to(device)


def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: GenerationConfig | None = None,
    seed: int = 0,
    batch_size: int = 32,
) -> list[str]:
    """Generate one response per prompt, on the model's device, ``batch_size`` prompts at a time.

    The model runs in eval mode under ``torch.inference_mode()`` (its training flag is restored
    afterwards). Generation stops at any eos id of the config, the tokenizer or the model's own
    generation config, and at the config's ``stop_strings``.

    Args:
        model: A causal LM (``AutoModelForCausalLM``).
        tokenizer: Its tokenizer; it needs a pad token. Its padding side is restored afterwards.
        prompts: Rendered prompts.
        config: Decoding settings (default: :data:`GENERATION_DEFAULTS`, greedy).
        seed: Sampling of batch ``i`` is seeded with ``seed + i``; the global RNG is left
            untouched, so the same seed, prompts and batch size give the same responses.
        batch_size: Prompts per ``generate`` call.

    Returns:
        The decoded new text of each prompt, special tokens skipped, in prompt order.

    Raises:
        ValueError: On ``seed < 0`` or ``batch_size < 1``.
    """
    if seed < 0 or batch_size < 1:
        raise ValueError(f"need seed >= 0 and batch_size >= 1, got {seed} and {batch_size}")
    config = config or generation_config(None)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return [
                text
                for i, start in enumerate(range(0, len(prompts), batch_size))
                for text in _generate_batch(
                    model, tokenizer, prompts[start : start + batch_size], config, seed + i
                )
            ]
    finally:
        model.train(was_training)


def _generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: GenerationConfig,
    seed: int,
) -> list[str]:
    enc = encode_left_padded(tokenizer, prompts, model.device)  # (B, T) each, left-padded
    config = copy.deepcopy(config)  # the caller's config stays as given
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = _eos_ids(model, tokenizer, config)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # seed this batch without touching global RNG
        torch.manual_seed(seed)
        out = model.generate(
            **enc,
            generation_config=config,
            tokenizer=tokenizer if config.stop_strings else None,
        )  # (B, T + new)
    new_tokens = out[:, enc["input_ids"].shape[1] :]  # (B, new), eos then pad after a stop
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _eos_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: GenerationConfig
) -> list[int]:
    """Union of the eos ids of the config, the model's generation config and the tokenizer."""
    ids: list[int | None] = [tokenizer.eos_token_id]
    for source in (config.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        ids += source if isinstance(source, list) else [source]
    return sorted({i for i in ids if i is not None})


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write ``rows`` (e.g. ``{"prompt": ..., "response": ...}``) to ``path``, one JSON per line.

    Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """Read the JSON objects of ``path``, one per non-blank line.

    Raises:
        ValueError: Naming the file and line number when a line is not valid JSON.
    """
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from err
    return rows
