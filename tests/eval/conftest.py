"""Tiny char-level tokenizers and random Llama models for the eval tests."""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")  # ids 0-3
PRINTABLE = string.digits + string.ascii_letters + " \n:[]?.,"


def char_tokenizer(alphabet: str = PRINTABLE) -> PreTrainedTokenizerFast:
    """One token per character of ``alphabet`` after the four special tokens."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + tuple(alphabet))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast, **overrides) -> LlamaConfig:
    """A 2-layer Llama config sized for ``tokenizer``; ``initializer_range`` is large so that
    greedy argmaxes are separated by more than float rounding."""
    kwargs = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "initializer_range": 0.5,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return LlamaConfig(**(kwargs | overrides))


@pytest.fixture
def make_tokenizer() -> Callable[..., PreTrainedTokenizerFast]:
    """:func:`char_tokenizer`, for tests that need another alphabet."""
    return char_tokenizer


@pytest.fixture
def make_config() -> Callable[..., LlamaConfig]:
    """:func:`tiny_config`, for tests that need other settings."""
    return tiny_config


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return char_tokenizer()


@pytest.fixture
def lm(tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(tokenizer), dtype=torch.float32)


@pytest.fixture
def reward_model(tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    torch.manual_seed(0)
    config = tiny_config(tokenizer, num_labels=1)
    return AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
