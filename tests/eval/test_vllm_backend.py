"""The vLLM backend's option mapping and its install hint (vLLM itself is not needed)."""

from __future__ import annotations

import importlib.util

import pytest
from transformers import GenerationConfig

from lit_align.eval.vllm_backend import sampling_kwargs, vllm_generate


def test_generation_config_maps_to_sampling_params():
    sampled = GenerationConfig(
        max_new_tokens=32, do_sample=True, temperature=0.7, top_p=0.9, stop_strings=["\n\n"]
    )
    kwargs = sampling_kwargs(sampled, seed=3)
    assert kwargs["max_tokens"] == 32 and kwargs["temperature"] == 0.7
    assert (kwargs["top_p"], kwargs["stop"], kwargs["seed"]) == (0.9, ["\n\n"], 3)
    greedy = sampling_kwargs(GenerationConfig(max_new_tokens=8), seed=0)
    assert (greedy["temperature"], greedy["top_k"]) == (0.0, -1)


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match=r"--backend vllm cannot honour .*\['num_beams'\]"):
        sampling_kwargs(GenerationConfig(num_beams=4), seed=0)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_missing_vllm_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'lit_align\[vllm\]'"):
        vllm_generate("model", ["p"], GenerationConfig(), 0, "float32")
