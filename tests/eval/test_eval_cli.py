"""``lit-align eval`` on exported tiny models: self-comparison is a tie, outputs are written."""

import json

import pytest
import torch

from lit_align.eval.cli import main as eval_main
from lit_align.export import export_hf
from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def _export(path, seed):
    cfg = PolicyConfig(tokenizer="builtin:sort", config=TINY)
    torch.manual_seed(seed)
    tok = load_tokenizer(cfg)
    return export_hf(build_causal_lm(cfg, tok), tok, str(path))


def test_policy_against_itself_ties(tmp_path, capsys):
    policy = _export(tmp_path / "a", seed=0)
    out = tmp_path / "eval.json"
    args = [
        "--policy",
        policy,
        "--baseline",
        policy,
        "--num_prompts",
        "8",
        "--num_pairs",
        "8",
        "--generation.max_new_tokens",
        "6",
        "--output",
        str(out),
    ]
    result = eval_main(args)
    # Identical models: every log-ratio is 0 (no pair has ρ_w > ρ_l), every comparison a tie.
    assert result.reward_accuracy == 0.0
    assert result.win_rate == 0.5 and result.policy_score == result.baseline_score
    assert json.loads(out.read_text())["num_prompts"] == 8
    assert "win rate of policy vs baseline on 8 prompts: 50.0%" in capsys.readouterr().out


def test_different_policies_and_missing_directory(tmp_path):
    a, b = _export(tmp_path / "a", seed=0), _export(tmp_path / "b", seed=1)
    result = eval_main(
        [
            "--policy",
            a,
            "--baseline",
            b,
            "--num_prompts",
            "4",
            "--num_pairs",
            "6",
            "--generation.max_new_tokens",
            "4",
        ]
    )
    assert 0.0 <= result.reward_accuracy <= 1.0 and result.num_pairs == 6
    with pytest.raises(FileNotFoundError, match="--policy: model directory .* does not exist"):
        eval_main(["--policy", str(tmp_path / "missing"), "--baseline", a])
