"""Shared fixtures: tiny models built from a config, and the embedded task's tokenizer."""

import pytest
from tiny import TINY

from lit_align.models import PolicyConfig

TINY_CONFIG = {**TINY, "max_position_embeddings": 128}


@pytest.fixture
def tiny_policy() -> PolicyConfig:
    """A 2-layer Llama with the embedded task's character tokenizer (random weights)."""
    return PolicyConfig(tokenizer="builtin:sort", config=dict(TINY_CONFIG))
