"""``--model.policy.gguf_file``: SmolLM2's 4-bit GGUF file loads (tokenizer and model) as an
ordinary model dequantised to the configured dtype, equal to the materialised directory."""

from importlib.metadata import version

import pytest
import torch

from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer
from lit_align.real_model import GGUF_FILE, gguf_path


def test_gguf_file_needs_pretrained():
    with pytest.raises(
        ValueError, match="--model.policy.gguf_file needs --model.policy.pretrained"
    ):
        PolicyConfig(tokenizer="builtin:sort", gguf_file="model.gguf")


def test_a_missing_gguf_file_is_named(tmp_path):
    cfg = PolicyConfig(pretrained=str(tmp_path), gguf_file="absent.gguf")
    with pytest.raises(FileNotFoundError, match="--model.policy.gguf_file: 'absent.gguf' is not"):
        load_tokenizer(cfg)


def _release(package: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version(package).split(".")[:2])


@pytest.mark.real
@pytest.mark.skipif(
    _release("transformers") < (5, 18),
    reason="GGUF tokenizers convert with ChatML's special tokens from transformers 5.18 on "
    "(the real extra's floor); the core floor 5.0 gives another eos and BOS handling",
)
def test_gguf_loads_dequantised_to_the_configured_dtype(real_model, real_tokenizer):
    try:
        directory = gguf_path().parent
    except RuntimeError as error:
        pytest.skip(f"the GGUF file is unavailable here: {error}")
    cfg = PolicyConfig(pretrained=str(directory), gguf_file=GGUF_FILE, dtype="bfloat16")
    tokenizer = load_tokenizer(cfg)
    model = build_causal_lm(cfg, tokenizer)
    text = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer(text)["input_ids"] == real_tokenizer(text)["input_ids"]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert not hasattr(model.config, "quantization_config") and not model.training
    want = real_model.state_dict()
    got = model.state_dict()
    assert got.keys() == want.keys()
    for name, value in got.items():
        assert value.dtype == torch.bfloat16, name
        assert torch.equal(value, want[name].to(torch.bfloat16)), name
