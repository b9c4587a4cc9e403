"""Fixtures of the real-model tests: SmolLM2-135M-Instruct loaded once per session."""

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def real_model(real_model_dir: Path):
    """SmolLM2-135M-Instruct in float32, eval mode (shared: tests must not change it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
