"""Shared fixtures: tiny models built from a config, and the embedded task's tokenizer."""

import pytest

from lit_align.models import PolicyConfig

TINY_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}


@pytest.fixture
def tiny_policy() -> PolicyConfig:
    """A 2-layer Llama with the embedded task's character tokenizer (random weights)."""
    return PolicyConfig(tokenizer="builtin:sort", config=dict(TINY_CONFIG))
