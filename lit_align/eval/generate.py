"""Batched, seeded generation of responses to rendered prompts, and JSONL records of them.

Prompts are strings the caller has already rendered (chat template applied), so they are
tokenised with ``add_special_tokens=False``. Batches are LEFT-padded so every row's next token
follows its last prompt token; ``model.generate`` derives position ids from the attention mask,
so a prompt gives the same greedy output alone or beside a longer one (up to float rounding).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate responses.

    Attributes:
        max_new_tokens: Most tokens generated per response (generation also stops at eos).
        do_sample: Sample from the (temperature, top-p) distribution; False decodes greedily.
        temperature: Softmax temperature when sampling; ignored when greedy.
        top_p: Nucleus mass kept when sampling (1.0 keeps all); ignored when greedy. No top-k
            cut is applied (HF's default ``top_k=50`` is turned off).
        seed: Seed of batch ``i``'s sampling is ``seed + i``; the global RNG is left untouched.
            The same seed, prompts and batch size give the same responses.
        batch_size: Prompts per ``generate`` call.
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


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


def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: GenerationConfig,
) -> list[str]:
    """Generate one response per prompt.

    The model runs in eval mode under ``torch.inference_mode()`` (its training flag is restored
    afterwards). Generation stops at any eos id of the tokenizer or the model's generation config.

    Args:
        model: A causal LM (``AutoModelForCausalLM``).
        tokenizer: Its tokenizer; it needs a pad token. Its padding side is restored afterwards.
        prompts: Rendered prompts.
        config: Decoding settings.

    Returns:
        The decoded new text of each prompt, special tokens skipped, in prompt order.
    """
    was_training = model.training
    model.eval()
    try:
        with padding_side(tokenizer, "left"), torch.inference_mode():
            return [
                text
                for i, start in enumerate(range(0, len(prompts), config.batch_size))
                for text in _generate_batch(
                    model, tokenizer, prompts[start : start + config.batch_size], config, i
                )
            ]
    finally:
        model.train(was_training)


def _generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: GenerationConfig,
    batch_index: int,
) -> list[str]:
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    enc = enc.to(model.device)  # input_ids, attention_mask: (B, T), left-padded
    sampling = (
        {"temperature": config.temperature, "top_p": config.top_p, "top_k": 0}
        if config.do_sample
        else {}
    )
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # seed this batch without touching global RNG
        torch.manual_seed(config.seed + batch_index)
        out = model.generate(
            **enc,
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=_eos_ids(model, tokenizer),
            **sampling,
        )  # (B, T + new)
    new_tokens = out[:, enc["input_ids"].shape[1] :]  # (B, new), eos then pad after a stop
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Union of the tokenizer's eos id and the model's generation-config eos id(s)."""
    model_eos = getattr(model.generation_config, "eos_token_id", None)
    ids = model_eos if isinstance(model_eos, list) else [model_eos]
    return sorted({i for i in [*ids, tokenizer.eos_token_id] if i is not None})


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
