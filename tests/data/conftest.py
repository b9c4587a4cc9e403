"""Fixtures of the data tests."""

import datasets
import pytest
from data_rows import build_bpe_tokenizer


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    """Each test gets its own ``datasets`` cache (read at call time), and no progress bars."""
    datasets.disable_progress_bars()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets_cache")


@pytest.fixture
def bpe_dir(tmp_path):
    """The BPE tokenizer of :func:`data_rows.build_bpe_tokenizer` saved to a directory."""
    path = tmp_path / "bpe_tokenizer"
    build_bpe_tokenizer().save_pretrained(path)
    return path
