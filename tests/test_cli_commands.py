"""The `lit-align` command table, what LightningCLI offers, logs, console and monitors of a run."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_align.callbacks import InstabilityMonitor
from lit_align.callbacks.progress import ConsoleProgress
from lit_align.cli import COMMANDS, main
from lit_align.lightning_cli import AlignCLI, run_lightning_cli
from lit_align.losses import DPO, SFT
from lit_align.types import StepRecord

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart_sft.yaml"


def test_top_level_help_lists_every_command_with_a_description(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(command.help)}$", out, re.M), name
    assert {"fit", "validate", "eval", "study", "export"} <= set(COMMANDS)


def test_test_and_predict_are_not_offered(capsys):
    assert set(AlignCLI.subcommands()) == {"fit", "validate"}
    for name in ("test", "predict"):
        with pytest.raises(SystemExit, match=f"unknown command '{name}'"):
            main([name])


def test_fit_help_offers_the_models_optimizer_only(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--model.optimizer" in out and "--overwrite" in out
    assert not re.search(r"--(optimizer|lr_scheduler)\b", out)


def test_run_logs_lr_clip_fraction_throughput_hparams_and_prints_lines(tmp_path, capsys):
    run_lightning_cli(
        [
            "fit",
            f"--config={CONFIG}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.log_every_n_steps=1",
            "--trainer.max_steps=6",
            "--data.builtin_rows=96",
            "--data.batch_size=8",
        ]
    )
    acc = EventAccumulator(str(tmp_path / "quickstart" / "sft"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"learning_rate", "clip_fraction", "throughput/tokens_per_sec"} <= tags
    assert {"throughput/samples_per_sec", "throughput/flops_per_sec"} <= tags
    lrs = [e.value for e in acc.Scalars("learning_rate")]
    assert len(lrs) == 6 and lrs[0] > lrs[-1]  # every step, the cosine decay visible
    assert all(0.0 <= e.value <= 1.0 for e in acc.Scalars("clip_fraction"))
    hparams = (tmp_path / "quickstart" / "sft" / "hparams.yaml").read_text()
    for key in ("loss: SFT", "lr: 0.003", "model:", "data:", "max_steps: 6"):
        assert key in hparams, key
    out = capsys.readouterr().out  # pytest's stdout is no terminal: plain lines
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert lines[0].startswith("step 1/6 (epoch 1/2) loss ")
    # SFT scores only the chosen rows: no margin or accuracy to show
    assert re.match(r"step 6/6 \(epoch 1/2\) loss \S+ lr \S+ tok/s \S+ elapsed", lines[-1])


def test_console_progress_checks_its_argument():
    with pytest.raises(ValueError, match="every_n_steps must be >= 1, got 0"):
        ConsoleProgress(every_n_steps=0)


def test_margin_events_only_for_losses_with_a_margin_objective(tmp_path, caplog):
    """A rising margin is margin_divergence under DPO, nothing under SFT (its capability)."""
    caplog.set_level("INFO")

    def events(loss) -> list[str]:
        monitor = InstabilityMonitor(window=1, margin_growth_windows=2, loss_z_threshold=None)
        trainer = SimpleNamespace(
            global_step=0, is_global_zero=True, loggers=[], log_dir=str(tmp_path)
        )
        module = SimpleNamespace(loss=loss, log_dict=lambda *a, **k: None)
        monitor.on_fit_start(trainer, module)
        for step, margin in enumerate([1.0, 2.0, 3.0, 4.0]):
            half = torch.full((2,), margin / 2)
            rec = StepRecord(
                torch.tensor(0.5), half, -half, torch.full((2,), -9.0), torch.full((2,), -9.0)
            )
            trainer.global_step = step
            monitor.on_train_batch_end(
                trainer, module, {"loss": rec.loss, "record": rec}, None, step
            )
        return list(monitor.state.counts)

    assert events(DPO()) == ["margin_divergence"]
    assert "instability at step 2: margin_divergence 2 > 2 (log); rising;" in caplog.text
    assert events(SFT()) == []
