"""InstabilityMonitor in real fits of the tiny policy: injected faults, each action, resume."""

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from monitor_runs import NaNLossAt, Probe, ScaleGradsAt, events, fit, same_weights, tensorboard_log

from lit_align.callbacks import InstabilityMonitor, RewardMarginMonitor

SPIKES = {"grad_z_threshold": 50.0, "loss_z_threshold": None, "spike_min_history": 4}


def test_nan_loss_is_logged_and_its_update_skipped(tmp_path):
    monitor = InstabilityMonitor(grad_z_threshold=None, loss_z_threshold=None)
    probe = Probe()
    trainer = fit(tmp_path, [monitor, probe], steps=6, loss=NaNLossAt(3))

    rows = events(tmp_path)
    assert [(e["step"], e["kind"], e["value"], e["action"]) for e in rows] == [
        (3, "nonfinite_grad", "nan", "skip_step"),  # the default action for NaN gradients
        (3, "nonfinite_loss", "nan", "log"),
    ]
    assert same_weights(probe.before[3], probe.after[3])  # step 3 left the weights untouched
    assert not same_weights(probe.before[2], probe.after[2])  # the other steps do update
    assert all(torch.isfinite(w).all() for w in probe.after[5].values())
    assert trainer.callback_metrics["instability/events"] == 2
    assert trainer.callback_metrics["instability/nonfinite_grad"] == 1
    text = tensorboard_log(tmp_path).Tensors("instability/events/text_summary")
    assert [t.step for t in text] == [3, 3]


def test_grad_spike_reduces_the_lr_for_good(tmp_path):
    monitor = InstabilityMonitor(actions={"grad_spike": "reduce_lr"}, lr_factor=0.5, **SPIKES)
    probe = Probe()
    trainer = fit(tmp_path, [ScaleGradsAt((6,)), monitor, probe], steps=8, lr=0.004)

    (row,) = events(tmp_path)
    assert (row["step"], row["kind"], row["action"]) == (6, "grad_spike", "reduce_lr")
    assert row["value"] > 1e4 and row["threshold"] == 50.0  # a robust z-score
    assert "lr now 0.002" in row["detail"]
    assert [probe.lr[s] for s in range(8)] == [0.004] * 6 + [0.002] * 2  # step 6 already slower
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == [0.002]  # kept by the schedule


@pytest.mark.parametrize("weights_only", [False, True])
def test_rollback_restores_the_checkpoint_then_stops_when_it_repeats(tmp_path, weights_only):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path / "ckpt",
        every_n_train_steps=3,
        save_last=True,
        save_weights_only=weights_only,
    )
    monitor = InstabilityMonitor(
        actions={"grad_spike": "rollback"}, max_consecutive_rollbacks=1, **SPIKES
    )
    probe = Probe()
    callbacks = [ScaleGradsAt((7, 8)), monitor, probe]
    trainer = fit(tmp_path, callbacks, steps=12, rows=48, checkpoint=checkpoint)

    first, second = events(tmp_path)
    assert (first["step"], first["kind"], first["action"]) == (7, "grad_spike", "rollback")
    assert "restored the step-6 checkpoint" in first["detail"]
    restored = (
        "weights only, it holds no optimizer state" if weights_only else "model and optimizer"
    )
    assert first["detail"].endswith(restored)
    # last.ckpt was written after step 5 (global_step 6): step 7 ends on those weights
    assert same_weights(probe.after[7], probe.after[5])
    assert not same_weights(probe.before[7], probe.after[5])  # step 6 had moved them
    # AdamW had made 7 updates (step 7 was skipped); the restored optimizer state has made 6
    assert probe.adam_steps[6] == 7 and probe.adam_steps[7] == (7 if weights_only else 6)
    # the same checkpoint again: past max_consecutive_rollbacks, the run stops instead
    assert (second["step"], second["action"]) == (8, "stop")
    assert "2 times in a row" in second["detail"]
    assert trainer.global_step == 9 and trainer.should_stop
    assert (tmp_path / "run" / "v" / "instability-stop-step=8.ckpt").is_file()


def test_stop_ends_fit_with_a_checkpoint(tmp_path):
    monitor = InstabilityMonitor(actions={"grad_spike": "stop"}, **SPIKES)
    probe = Probe()
    trainer = fit(tmp_path, [ScaleGradsAt((5,)), monitor, probe], steps=10, rows=40)

    (row,) = events(tmp_path)
    path = tmp_path / "run" / "v" / "instability-stop-step=5.ckpt"
    assert (row["step"], row["action"]) == (5, "stop") and str(path) in row["detail"]
    assert trainer.global_step == 6  # stopped after the spiking step, which was skipped
    assert same_weights(probe.before[5], probe.after[5])
    saved = torch.load(path, weights_only=False)
    assert saved["global_step"] == 6
    weights = {k.removeprefix("policy."): v for k, v in saved["state_dict"].items()}
    assert same_weights(weights, probe.after[5])


class StateAtStart(Callback):
    """Copies the monitors' state when training starts (after a resume has restored it)."""

    def __init__(self, *monitors):
        self.monitors, self.states = monitors, None

    def on_train_start(self, trainer, pl_module):
        self.states = [m.state_dict() for m in self.monitors]


def test_resume_restores_monitor_state(tmp_path):
    def run(steps, ckpt_path=None):
        monitors = (InstabilityMonitor(window=2, spike_min_history=2), RewardMarginMonitor(2))
        probe = StateAtStart(*monitors)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        fit(
            tmp_path, [*monitors, probe], steps, rows=40, checkpoint=checkpoint, ckpt_path=ckpt_path
        )
        return [m.state_dict() for m in monitors], probe.states

    saved, _ = run(steps=4)
    assert len(saved[0]["grad_history"]) == 4 and saved[0]["start"] is not None
    assert saved[1]["seen"] == 4 and saved[1]["start"] is not None
    _, restored = run(steps=6, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert restored == saved
