"""DPO's reward margin keeps growing on the embedded task while SPO's settles at its target.

Both runs go through the ``lit-align`` CLI with the same settings (tiny policy, 64 training pairs
seen for 8 epochs, β = 4, constant LR 0.01) and the monitors added with ``--trainer.callbacks``.
SPO's target is the data's score gap (mean ≈ 4.6 reward units). The comparison reads the margins
that :class:`RewardMarginMonitor` wrote to TensorBoard, one value per window of 8 steps.
"""

import json
from pathlib import Path

import pytest
from monitor_runs import TINY
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_align.lightning_cli import run_lightning_cli

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart_sft.yaml"
STEPS, WINDOW = 64, 8
MONITORS = [
    {"class_path": "lit_align.callbacks.RewardMarginMonitor", "init_args": {"window": WINDOW}},
    {
        "class_path": "lit_align.callbacks.InstabilityMonitor",
        "init_args": {"window": WINDOW, "margin_bound": 8.0, "margin_growth_windows": None},
    },
]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def run(tmp_path: Path, loss: str) -> tuple[dict[str, list[float]], list[dict]]:
    """Window series of the preference metrics, and the instability events, of one run."""
    run_lightning_cli(
        [
            "fit",
            f"--config={CONFIG}",
            "--model.policy.pretrained=null",
            f"--model.policy.config={json.dumps(TINY)}",
            f"--model.loss={loss}",
            "--model.loss.beta=4.0",
            "--model.optimizer.init_args.lr=0.01",
            "--model.schedule.warmup_ratio=0",
            "--model.schedule.decay=constant",
            "--trainer.max_epochs=null",
            f"--trainer.max_steps={STEPS}",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_checkpointing=false",
            f"--trainer.callbacks={json.dumps(MONITORS)}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.logger.init_args.version={loss}",
            "--data.builtin_rows=64",
            "--data.batch_size=8",
            "--data.label_noise=0",
        ]
    )
    run_dir = tmp_path / "quickstart" / loss
    log = EventAccumulator(str(run_dir))
    log.Reload()
    series = {
        tag.removeprefix("preference/"): [e.value for e in log.Scalars(tag)]
        for tag in log.Tags()["scalars"]
        if tag.startswith("preference/")
    }
    event_log = run_dir / "instability_events.jsonl"
    rows = event_log.read_text().splitlines() if event_log.exists() else []
    return series, [json.loads(row) for row in rows]


def test_dpo_margin_keeps_growing_while_spo_settles_at_its_target(tmp_path):
    dpo, dpo_events = run(tmp_path, "DPO")
    spo, spo_events = run(tmp_path, "SPO")
    windows = STEPS // WINDOW
    assert len(dpo["margin"]) == len(spo["margin"]) == windows

    def mean(values):
        return sum(values) / len(values)

    # mid-run: windows 2-3 (steps 16-31); end: windows 6-7 (steps 48-63)
    mid, end = slice(2, 4), slice(6, 8)
    dpo_growth = mean(dpo["margin"][end]) - mean(dpo["margin"][mid])
    spo_growth = mean(spo["margin"][end]) - mean(spo["margin"][mid])
    assert dpo_growth > 2.0, dpo["margin"]
    assert spo_growth < dpo_growth / 2, (spo["margin"], dpo["margin"])
    assert abs(mean(spo["target_signed"][end])) < 1.0, spo["target_signed"]  # at the target
    assert mean(dpo["margin"][end]) > mean(spo["margin"][end]) + 3.0
    assert "target_signed" not in dpo  # DPO has no finite target
    # the monitor flags DPO's divergence (window mean margin beyond 8), never SPO's
    assert [e["kind"] for e in dpo_events if e["kind"] == "margin_divergence"] == [
        "margin_divergence"
    ]
    assert not [e for e in spo_events if e["kind"] == "margin_divergence"]
