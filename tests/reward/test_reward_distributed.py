"""Reward models on two CPU ranks: an FSDP2 fit, and ``lit-align score`` sharded over ranks."""

import json
from pathlib import Path

import pytest
import torch
from distributed.launch import TORCHRUN, clean_env, finish, kill, start
from tiny import TINY
from transformers import AutoModelForSequenceClassification

from lit_align.data.synthetic import make_rows
from lit_align.reward.score import ScoreSettings, score_dataset

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "reward_model.yaml"


@pytest.fixture(scope="module")
def sharded_fit(tmp_path_factory) -> Path:
    """2 steps of FSDP2 on two ranks (float32 compute), checkpointed and exported."""
    tmp = tmp_path_factory.mktemp("fsdp2_reward")
    args = [
        "fit",
        f"--config={CONFIG}",
        f"--model.policy.config={TINY}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=FSDP2Strategy",
        "--trainer.strategy.param_dtype=float32",
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp}",
        "--data.builtin_rows=128",
        "--data.max_length=48",
        "--data.batch_size=8",
    ]
    proc = start([*TORCHRUN, "-m", "lit_align.cli", *args], tmp / "fit.log", clean_env())
    run_dir = tmp / "reward" / "sort"
    try:
        finish(proc, tmp / "fit.log", [run_dir / "export" / "model.safetensors"])
    finally:
        kill(proc)
    return run_dir


def test_fsdp2_fit_checkpoints_shards_and_exports_a_whole_model(sharded_fit):
    checkpoint = sharded_fit / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir()  # a distributed checkpoint: one shard file per rank
    assert len(list(checkpoint.glob("*.distcp"))) == 2
    model = AutoModelForSequenceClassification.from_pretrained(sharded_fit / "export")
    assert model.config.num_labels == 1
    ids = torch.tensor([[3, 4, 5, 6]])
    assert torch.isfinite(model(ids).logits).all()


def test_scoring_on_two_ranks_matches_one_process(sharded_fit, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in make_rows(21, seed=2)))
    model = str(sharded_fit / "export")
    single = tmp_path / "single.jsonl"
    score_dataset(ScoreSettings(model, str(pairs), str(single), batch_size=4))
    two = tmp_path / "two.jsonl"
    args = ["score", f"--model={model}", f"--dataset={pairs}", f"--output={two}", "--batch_size=4"]
    proc = start([*TORCHRUN, "-m", "lit_align.cli", *args], tmp_path / "score.log", clean_env())
    try:
        finish(proc, tmp_path / "score.log", [two])
    finally:
        kill(proc)
    expected, got = ([json.loads(r) for r in p.read_text().splitlines()] for p in (single, two))
    assert len(got) == 21
    for a, b in zip(expected, got):
        assert b["prompt"] == a["prompt"]
        assert b["score_chosen"] == pytest.approx(a["score_chosen"], abs=1e-5)
        assert b["score_rejected"] == pytest.approx(a["score_rejected"], abs=1e-5)
