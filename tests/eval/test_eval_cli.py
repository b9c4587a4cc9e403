"""``lit-align eval`` on exported tiny models: self-comparison ties, any dataset and judge."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, LlamaConfig

from lit_align.eval.cli import main as eval_main
from lit_align.eval.compare import make_judge, resolve_split
from lit_align.eval.runtime import resolve_device, resolve_dtype, run_max_length
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
    out = tmp_path / "eval"
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
        "--output_dir",
        str(out),
    ]
    result = eval_main(args)
    # Identical models: every log-ratio is 0 (no pair has ρ_w > ρ_l), every comparison a tie.
    assert result.reward_accuracy == 0.0
    assert result.win_rate == 0.5 and result.policy_score == result.baseline_score
    assert json.loads((out / "results.json").read_text())["num_prompts"] == 8
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(
        r["policy"] == r["baseline"] and r["outcome"] == 0.5 for r in rows
    )
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


def test_any_dataset_with_a_reward_model_judge(tmp_path):
    a, b = _export(tmp_path / "a", seed=0), _export(tmp_path / "b", seed=1)
    tok = load_tokenizer(PolicyConfig(tokenizer="builtin:sort"))
    config = LlamaConfig(vocab_size=len(tok), num_labels=1, pad_token_id=tok.pad_token_id, **TINY)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_config(config)
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    rows = [{"prompt": f"q{i}: ", "chosen": "yes", "rejected": "no"} for i in range(5)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = eval_main(
        [
            "--policy",
            a,
            "--baseline",
            b,
            "--dataset",
            str(data),
            "--split",
            "train",
            "--judge",
            "reward_model",
            "--judge_model",
            str(tmp_path / "rm"),
            "--generation.max_new_tokens",
            "4",
        ]
    )
    assert result.num_pairs == 5 and result.num_prompts == 5
    assert result.policy_score is not None and result.policy_correct is None


def test_judge_selection_errors(tmp_path):
    """Outside the embedded task no judge means reward accuracy only; judge flags are checked
    before any model or data loads (the policy directory here holds no model)."""
    assert make_judge(None, "my/data", None) is None
    with pytest.raises(ValueError, match="--judge rule judges only 'builtin:sort'"):
        make_judge("rule", "my/data", None)
    with pytest.raises(FileNotFoundError, match="--judge_model: directory '/no/rm' does not"):
        make_judge("reward_model", "my/data", "/no/rm")
    with pytest.raises(ValueError, match="--judge reward_model needs --judge_model"):
        eval_main(
            ["--policy", str(tmp_path), "--baseline", str(tmp_path), "--judge", "reward_model"]
        )


def _pairs_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_reward_accuracy_without_a_judge_skips_bad_rows_and_names_the_split(tmp_path, capsys):
    a, b = _export(tmp_path / "a", seed=0), _export(tmp_path / "b", seed=1)
    rows = [{"prompt": f"q{i}: ", "chosen": "yes", "rejected": "no"} for i in range(4)]
    data = _pairs_file(tmp_path / "heldout.jsonl", [*rows, {"prompt": "q: ", "chosen": "yes"}])
    base = ["--policy", a, "--baseline", b, "--dataset", data]
    with pytest.raises(ValueError, match=r"split 'heldout', row 4.*rejected"):
        eval_main(base)
    result = eval_main([*base, "--on_bad_rows", "skip"])
    assert (result.num_pairs, result.num_bad_rows, result.win_rate) == (4, 1, None)
    out = capsys.readouterr().out
    assert "held-out reward accuracy on 4 pairs" in out and "1 bad rows skipped" in out
    assert "no --judge: reward accuracy only" in out


def test_max_length_defaults_to_the_training_run(tmp_path):
    """``<run>/config.yaml`` beside ``<run>/export`` gives data.max_length, else the default."""
    run = tmp_path / "run"
    policy = _export(run / "export", seed=0)
    assert run_max_length(policy) == 1024
    (run / "config.yaml").write_text("data:\n  max_length: 48\n")
    assert run_max_length(policy) == 48
    assert (
        eval_main(
            [
                "--policy",
                policy,
                "--baseline",
                policy,
                "--num_prompts",
                "2",
                "--num_pairs",
                "2",
                "--generation.max_new_tokens",
                "2",
            ]
        ).max_length
        == 48
    )


def test_device_and_dtype_choice(monkeypatch):
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="--dtype must be auto or a torch float dtype.*'int8'"):
        resolve_dtype("int8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_dtype("auto") == torch.bfloat16
    assert resolve_device("cpu") == "cpu"


def test_hub_dataset_needs_a_split(tmp_path):
    with pytest.raises(ValueError, match="--split is required for --dataset 'org/prefs'"):
        resolve_split("org/prefs", None)
    data = tmp_path / "held-out.v2.jsonl"
    data.write_text("")
    assert resolve_split(str(data), None) == "held_out"
    assert resolve_split("org/prefs", "test") == "test"
