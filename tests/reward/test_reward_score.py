"""``lit-align score``: a new file whose score columns are the reward model's scores."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY
from transformers import AutoModelForSequenceClassification

from lit_align import cli
from lit_align.data.collate import Truncation, special_prefix, tokenize_row
from lit_align.data.formats import DataError
from lit_align.data.synthetic import make_rows
from lit_align.export import export_hf
from lit_align.models import PolicyConfig, load_tokenizer
from lit_align.reward.model import build_reward_model
from lit_align.reward.score import ScoreSettings, score_dataset

BAD_ROW = 3  # chosen == rejected: malformed, gets null scores


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory) -> Path:
    """A new tiny reward model (random weights) exported with the embedded task's tokenizer."""
    torch.manual_seed(0)
    cfg = PolicyConfig(tokenizer="builtin:sort", config=dict(TINY))
    tokenizer = load_tokenizer(cfg)
    path = tmp_path_factory.mktemp("rm") / "export"
    return Path(export_hf(build_reward_model(cfg, tokenizer), tokenizer, str(path)))


@pytest.fixture
def pairs(tmp_path) -> Path:
    """20 sort pairs with their task scores and an extra column; row 3 is malformed."""
    rows = [{**row, "id": i} for i, row in enumerate(make_rows(20, seed=1))]
    rows[BAD_ROW]["rejected"] = rows[BAD_ROW]["chosen"]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_by_one(reward_dir: Path, row: dict) -> tuple[float, float]:
    """The model's scores of one pair, each sequence alone (no padding, no batching)."""
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    tokenizer = load_tokenizer(PolicyConfig(pretrained=str(reward_dir)))
    ids = tokenize_row(row, tokenizer, Truncation(1024), special_prefix(tokenizer))
    with torch.no_grad():
        return tuple(
            model(torch.tensor([ids["prompt_ids"] + ids[f"{name}_ids"]])).logits.item()
            for name in ("chosen", "rejected")
        )


def test_scores_match_the_model_row_by_row(reward_dir, pairs, tmp_path):
    output = tmp_path / "scored.jsonl"
    summary = score_dataset(
        ScoreSettings(model=str(reward_dir), dataset=str(pairs), output=str(output), batch_size=6)
    )
    original, scored = _read(pairs), _read(output)
    assert [r["id"] for r in scored] == list(range(20))  # every row, in order, columns kept
    assert (summary.rows, summary.scored) == (20, 19)
    assert "identical to 'chosen'" in summary.errors[0]
    assert scored[BAD_ROW]["score_chosen"] is None and scored[BAD_ROW]["score_rejected"] is None
    for i in (0, 7, 19):
        expected = _one_by_one(reward_dir, original[i])
        got = (scored[i]["score_chosen"], scored[i]["score_rejected"])
        assert got == pytest.approx(expected, abs=1e-5)
        assert got != (original[i]["score_chosen"], original[i]["score_rejected"])
    gaps = [r["score_chosen"] - r["score_rejected"] for i, r in enumerate(scored) if i != BAD_ROW]
    assert summary.accuracy == pytest.approx(sum(g > 0 for g in gaps) / 19)


def test_never_writes_over_the_input_or_an_earlier_output(reward_dir, pairs, tmp_path):
    digest = hashlib.sha256(pairs.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="is the input dataset"):
        score_dataset(ScoreSettings(str(reward_dir), str(pairs), str(pairs), overwrite=True))
    output = tmp_path / "scored.parquet"
    output.write_text("earlier")
    with pytest.raises(FileExistsError, match="--overwrite true"):
        score_dataset(ScoreSettings(str(reward_dir), str(pairs), str(output)))
    score_dataset(ScoreSettings(str(reward_dir), str(pairs), str(output), overwrite=True))
    assert hashlib.sha256(pairs.read_bytes()).hexdigest() == digest
    assert output.stat().st_size > len("earlier")


def test_unknown_output_type_names_the_flag(reward_dir, pairs, tmp_path):
    with pytest.raises(ValueError, match=r"--output .*\.csv'.*\.jsonl, \.json, \.parquet"):
        ScoreSettings(str(reward_dir), str(pairs), str(tmp_path / "scored.csv"))


def test_a_malformed_split_slice_names_the_flag(reward_dir, pairs, tmp_path):
    with pytest.raises(DataError, match=r"^--split 'train\[:5x\]' is not a split slice"):
        ScoreSettings(str(reward_dir), str(pairs), str(tmp_path / "s.jsonl"), split="train[:5x]")


def test_a_split_slice_scores_those_rows(reward_dir, pairs, tmp_path):
    output = tmp_path / "half.jsonl"
    summary = score_dataset(
        ScoreSettings(str(reward_dir), str(pairs), str(output), split="train[:50%]")
    )
    total = len(pairs.read_text().splitlines())
    assert summary.rows == total // 2 == len(output.read_text().splitlines())


def test_cli_score_subcommand_writes_a_directory(reward_dir, pairs, tmp_path, monkeypatch, capsys):
    output = tmp_path / "scored"
    args = [f"--model={reward_dir}", f"--dataset={pairs}", f"--output={output}"]
    monkeypatch.setattr(sys, "argv", ["lit-align", "score", *args])
    cli.main()
    assert "scored 19 of 20 pairs" in capsys.readouterr().out
    from datasets import load_from_disk

    assert load_from_disk(str(output)).column_names[-2:] == ["score_chosen", "score_rejected"]


def test_bad_dtype_names_the_flag(reward_dir, pairs, tmp_path):
    with pytest.raises(ValueError, match=r"--dtype must be one of .* got 'int8'"):
        ScoreSettings(str(reward_dir), str(pairs), str(tmp_path / "s.jsonl"), dtype="int8")
