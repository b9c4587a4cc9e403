"""End to end through the ``lit-align`` CLI on the embedded task (tiny model, a few steps)."""

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_align.lightning_cli import run_lightning_cli

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart_sft.yaml"
TINY = [
    "--model.policy.pretrained=null",
    "--model.policy.tokenizer=builtin:sort",
    "--model.policy.config={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, "
    "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}",
]


def _fit(tmp_path, *extra: str):
    args = [
        "fit",
        f"--config={CONFIG}",
        *TINY,
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.version=test",
        "--trainer.log_every_n_steps=1",
        "--data.builtin_rows=480",
        "--data.label_noise=0.0",  # the SFT config flips 30% of pairs; these tests want clean data
        "--data.batch_size=16",
        *extra,
    ]
    return run_lightning_cli(args)


def _scalars(run_dir: Path, tag: str) -> list[float]:
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_dpo_fit_learns_the_task(tmp_path):
    """DPO from a random tiny model: loss falls, held-out reward accuracy rises above chance."""
    cli = _fit(
        tmp_path,
        "--model.loss=DPO",
        "--model.loss.beta=0.1",
        "--model.optimizer.init_args.lr=0.003",
        "--trainer.max_epochs=2",
    )
    run_dir = tmp_path / "quickstart" / "test"
    losses = _scalars(run_dir, "loss")
    assert len(losses) == 60  # 2 epochs x 30 steps, every step logged
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference: ln 2
    assert sum(losses[-10:]) / 10 < 0.7 * losses[0]
    accuracy = _scalars(run_dir, "val_rewards/accuracies")[-1]
    assert accuracy > 0.65, accuracy  # chance is 0.5; 48 held-out pairs
    assert cli.trainer.callback_metrics["val_rewards/margins"] > 0
    assert (run_dir / "export" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()


def test_print_config_shows_swapped_loss():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_align.cli",
            "fit",
            f"--config={CONFIG}",
            "--model.loss=SPO",
            "--model.loss.beta=0.5",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "class_path: lit_align.losses.SPO" in out
    assert "beta: 0.5" in out


def test_bad_loss_flag_names_the_flag(tmp_path):
    with pytest.raises(Exception, match=r"--model.loss.beta must be > 0, got -1"):
        _fit(tmp_path, "--model.loss=DPO", "--model.loss.beta=-1", "--trainer.max_steps=1")
