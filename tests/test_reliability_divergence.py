"""A diverged run fails, non-zero, naming the step and the tensor, and keeps its last good state.

In-process fits of the tiny policy (``callbacks/monitor_runs.py``): NaN gradients on every step
from step 2 under ``InstabilityMonitor`` escalate after ``max_consecutive_skips``; a learning
rate of 1e30 without a monitor makes the weights non-finite, and the next checkpoint is refused
(the previous one stays) instead of being written over it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parent / "callbacks"))  # the monitors' helpers
from monitor_runs import Probe, ScaleGradsAt, events, fit, same_weights  # noqa: E402

from lit_align.callbacks import InstabilityMonitor  # noqa: E402
from lit_align.callbacks.instability import InstabilityError  # noqa: E402
from lit_align.finite import NonFiniteWeightsError  # noqa: E402


def test_consecutive_skips_escalate_to_a_failed_run_with_the_last_good_weights(tmp_path, caplog):
    monitor = InstabilityMonitor(
        grad_z_threshold=None, loss_z_threshold=None, max_consecutive_skips=3
    )
    probe = Probe()
    nan_grads = ScaleGradsAt(tuple(range(2, 20)), factor=float("nan"))
    with pytest.raises(
        InstabilityError,
        match=r"step 6: 4 optimizer steps in a row skipped .*max_consecutive_skips=3",
    ):
        fit(tmp_path, [nan_grads, monitor, probe], steps=20, rows=80)
    assert [(e["step"], e["action"]) for e in events(tmp_path)] == [
        (s, "skip_step") for s in range(2, 6)
    ]
    saved = torch.load(tmp_path / "run" / "v" / "instability-stop-step=6.ckpt", weights_only=False)
    weights = {k.removeprefix("policy."): v for k, v in saved["state_dict"].items()}
    assert same_weights(weights, probe.after[1])  # the state after the last good step
    assert saved["callbacks"]  # the monitor's counts travel with it
    assert "nonfinite_grad x4 (skip_step); 4 steps skipped" in caplog.text


def test_skips_that_recover_do_not_escalate(tmp_path):
    monitor = InstabilityMonitor(
        grad_z_threshold=None, loss_z_threshold=None, max_consecutive_skips=2
    )
    trainer = fit(tmp_path, [ScaleGradsAt((1, 2, 4, 5), float("nan")), monitor], steps=8, rows=32)
    assert (
        trainer.global_step == 8 and monitor.state.skipped == 4 and monitor.state.skip_streak == 0
    )


def test_nonfinite_weights_are_never_saved_over_a_good_checkpoint(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True)
    named = r"non-finite weights in policy\.model\.\S+ \(\d+ of \d+ values\)"
    with pytest.raises(
        NonFiniteWeightsError, match=rf"step 2: refused to save a checkpoint: {named}"
    ):
        fit(tmp_path, [], steps=6, lr=1e30, checkpoint=checkpoint)
    good = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert good["global_step"] == 1
    assert all(torch.isfinite(v).all() for v in good["state_dict"].values())
