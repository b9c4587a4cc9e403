"""``lit-align eval`` on the real UltraFeedback held-out excerpt with SmolLM2's tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig

from lit_align.eval.cli import main as eval_main
from lit_align.export import export_hf
from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer

pytestmark = pytest.mark.real
SIZES = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1}
HEADS = {"num_attention_heads": 2, "num_key_value_heads": 1}


@pytest.fixture(scope="module")
def tiny_real(tmp_path_factory, real_model_dir):
    """Two tiny Llamas and a tiny reward model with the real 49k-token ChatML tokenizer."""
    root = tmp_path_factory.mktemp("tiny_real")
    cfg = PolicyConfig(tokenizer=str(real_model_dir), config={**SIZES, **HEADS})
    tok = load_tokenizer(cfg)
    dirs = {}
    for seed, name in enumerate(("policy", "baseline")):
        torch.manual_seed(seed)
        dirs[name] = export_hf(build_causal_lm(cfg, tok), tok, str(root / name))
    rm_config = LlamaConfig(vocab_size=len(tok), num_labels=1, **SIZES, **HEADS)
    AutoModelForSequenceClassification.from_config(rm_config).save_pretrained(root / "rm")
    tok.save_pretrained(root / "rm")
    dirs["rm"] = str(root / "rm")
    return dirs


def test_real_heldout_prompts_are_rendered_text(tiny_real, ultrafeedback, tmp_path):
    """Prompts come rendered from the data (ChatML, whole user turn, no decoded ids); every
    win rate carries W/T/L counts; the split is named after the file."""
    out = tmp_path / "eval"
    result = eval_main(
        [
            "--policy", tiny_real["policy"], "--baseline", tiny_real["baseline"],
            "--dataset", str(ultrafeedback / "heldout.jsonl"), "--on_bad_rows", "skip",
            "--judge", "reward_model", "--judge_model", tiny_real["rm"],
            "--num_prompts", "3", "--num_pairs", "4", "--max_length", "256",
            "--generation.max_new_tokens", "3", "--generation.do_sample", "true",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    assert (result.num_pairs, result.num_prompts, result.max_length) == (4, 3, 256)
    assert result.wins + result.ties + result.losses == 3
    first = json.loads((ultrafeedback / "heldout.jsonl").read_text().splitlines()[0])
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    user = f"<|im_start|>user\n{first['prompt']}<|im_end|>\n<|im_start|>assistant\n"
    assert rows[0]["prompt"].endswith(user)
    assert all(r["prompt"].startswith("<|im_start|>system\n") for r in rows)
