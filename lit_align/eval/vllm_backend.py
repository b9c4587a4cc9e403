"""Optional generation with vLLM (``pip install 'lit_align[vllm]'``) for large policies.

The transformers path (:func:`lit_align.eval.generate.generate_responses`) stays the default; this
backend maps the same :class:`~transformers.GenerationConfig` onto vLLM's ``SamplingParams``.
Options without a vLLM counterpart are refused rather than silently dropped.
"""

from __future__ import annotations

from typing import Any

from transformers import GenerationConfig

SUPPORTED = {
    "max_new_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "stop_strings": "stop",
}
"""``GenerationConfig`` field → ``vllm.SamplingParams`` argument."""


def sampling_kwargs(config: GenerationConfig, seed: int) -> dict[str, Any]:
    """``SamplingParams`` arguments equivalent to ``config`` (greedy = temperature 0).

    Raises:
        ValueError: If ``config`` sets a field this backend cannot honour.
    """
    default = GenerationConfig().to_dict()
    changed = {k for k, v in config.to_diff_dict().items() if default.get(k) != v}
    ignored = {"do_sample", "eos_token_id", "pad_token_id", "bos_token_id", "transformers_version"}
    unsupported = sorted(changed - set(SUPPORTED) - ignored)
    if unsupported:
        raise ValueError(
            f"--backend vllm cannot honour --generation options {unsupported}; "
            f"supported: {sorted(SUPPORTED)} and do_sample (or use --backend transformers)"
        )
    kwargs = {
        target: getattr(config, field)
        for field, target in SUPPORTED.items()
        if getattr(config, field) is not None
    }
    if not config.do_sample:
        kwargs.update(temperature=0.0, top_p=1.0, top_k=-1)
    elif not kwargs.get("top_k"):
        kwargs["top_k"] = -1  # vLLM's "no top-k cut"
    return {**kwargs, "seed": seed}


def vllm_generate(
    model_dir: str, prompts: list[str], config: GenerationConfig, seed: int, dtype: str
) -> list[str]:
    """Generate one response per rendered prompt with vLLM.

    Raises:
        ImportError: If vLLM is not installed, with the install line.
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError as err:
        raise ImportError(
            "--backend vllm needs vLLM: pip install 'lit_align[vllm]' (or use --backend "
            "transformers)"
        ) from err
    llm = LLM(model=model_dir, dtype=dtype, seed=seed)
    params = SamplingParams(**sampling_kwargs(config, seed))
    outputs = llm.generate(prompts, params)
    return [out.outputs[0].text for out in outputs]
