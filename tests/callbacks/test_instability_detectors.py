"""InstabilityMonitor's loss and window detectors, fed hand-made step records through its hooks."""

import json
from types import SimpleNamespace

import pytest
import torch

from lit_align.callbacks import InstabilityMonitor
from lit_align.callbacks.instability_detectors import (
    LOSS_SPIKE,
    MARGIN_DIVERGENCE,
    NONFINITE_LOSS,
    LevelDetector,
    MarginGrowthDetector,
    SpikeDetector,
)
from lit_align.types import StepRecord


def record(margin=0.0, chosen=-10.0, rejected=-10.0, loss=0.5) -> StepRecord:
    """Two pairs, each with reward margin ``margin`` and the given log-prob sums."""
    half = torch.full((2,), margin / 2)
    return StepRecord(
        loss=torch.tensor(loss),
        chosen_rewards=half,
        rejected_rewards=-half,
        chosen_logps=torch.full((2,), chosen),
        rejected_logps=torch.full((2,), rejected),
    )


class FakeModule:
    """Receives the counters the monitor logs."""

    def __init__(self):
        self.logged = {}

    def log_dict(self, metrics, **kwargs):
        self.logged = metrics


def feed(monitor, records, tmp_path):
    """Batch ``i`` ends at ``global_step = i`` (no optimizer step: the step index is ``i``)."""
    trainer = SimpleNamespace(global_step=0, is_global_zero=True, loggers=[], log_dir=str(tmp_path))
    module = FakeModule()
    monitor.on_fit_start(trainer, module)
    for i, rec in enumerate(records):
        trainer.global_step = i
        monitor.on_train_batch_end(trainer, module, {"loss": rec.loss, "record": rec}, None, i)
    lines = (tmp_path / "instability_events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], module.logged


def test_window_detectors_fire_once_and_rearm(tmp_path):
    monitor = InstabilityMonitor(
        window=2,
        margin_bound=10.0,
        margin_growth_windows=3,
        displacement_nats=5.0,
        collapse_nats=8.0,
        loss_z_threshold=None,
    )
    windows = [  # (margin, chosen, rejected) per window of two batches
        (1.0, -10.0, -10.0),  # the start values
        (2.0, -12.0, -14.0),
        (3.0, -16.0, -20.0),  # chosen fell 6 > 5, rejected fell 10 > 8
        (4.0, -16.0, -12.0),  # third rise in a row; displacement still holds: no new event
        (11.0, -10.0, -19.0),  # beyond the bound; rejected fell 9 > 8 again after clearing
    ]
    records = [record(*w) for w in windows for _ in range(2)]
    events, logged = feed(monitor, records, tmp_path)
    assert [(e["step"], e["kind"], e["value"], e["threshold"]) for e in events] == [
        (5, "likelihood_displacement", 6.0, 5.0),
        (5, "rejected_collapse", 10.0, 8.0),
        (7, "margin_divergence", 3.0, 3.0),
        (9, "margin_divergence", 11.0, 10.0),
        (9, "rejected_collapse", 9.0, 8.0),
    ]
    assert all(e["action"] == "log" for e in events)
    assert "rising" in events[2]["detail"]
    assert logged["instability/events"] == 5.0 and logged["instability/rejected_collapse"] == 2.0


def test_loss_spike_and_nonfinite_loss(tmp_path):
    monitor = InstabilityMonitor(spike_min_history=4, loss_z_threshold=6.0)
    losses = [0.50, 0.52, 0.49, 0.51, 0.50, 5.0, float("nan"), 0.5]
    events, _ = feed(monitor, [record(loss=x) for x in losses], tmp_path)
    assert [(e["step"], e["kind"]) for e in events] == [(5, "loss_spike"), (6, "nonfinite_loss")]
    # median 0.50 and MAD 0.01 of the first five: z = 4.5 / (1.4826 · 0.01)
    assert events[0]["value"] == pytest.approx(4.5 / 0.014826, rel=1e-6)
    assert events[1]["value"] == "nan" and events[1]["threshold"] is None
    assert monitor.state_dict()["loss_history"] == pytest.approx(
        [0.5, 0.52, 0.49, 0.51, 0.5, 5.0, 0.5]
    )


def test_state_dict_round_trip(tmp_path):
    monitor = InstabilityMonitor(window=2, margin_growth_windows=2)
    feed(monitor, [record(m, -10.0 - m, -10.0 - 2 * m) for m in map(float, range(7))], tmp_path)
    state = json.loads(json.dumps(monitor.state_dict()))  # plain, JSON-able values
    fresh = InstabilityMonitor(window=2, margin_growth_windows=2)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == monitor.state_dict()
    assert state["start"] == [-10.5, -11.0] and state["counts"] == {"margin_divergence": 1}


def test_detectors_need_no_trainer():
    """The pure detectors: one value in, an event or None out, state in named fields."""
    spikes = SpikeDetector(NONFINITE_LOSS, LOSS_SPIKE, threshold=6.0, window=3, min_history=2)
    assert spikes.update(1.0) is None and spikes.update(1.0) is None
    spike = spikes.update(2.0)  # median 1, MAD 0: the scale floor 0.01 gives z = 100
    assert (spike.kind, spike.value, spike.threshold) == (LOSS_SPIKE, pytest.approx(100.0), 6.0)
    nan = spikes.update(float("nan"))
    assert nan.kind == NONFINITE_LOSS and nan.threshold is None
    assert spikes.history == [1.0, 1.0, 2.0]  # the NaN is not remembered

    bound = LevelDetector(MARGIN_DIVERGENCE, threshold=1.0)
    fired = [bound.update(v, "") for v in (2.0, 3.0, 0.5, 2.0)]
    assert [e is not None for e in fired] == [True, False, False, True]  # once, then re-armed

    growth = MarginGrowthDetector(windows=2)
    fired = [growth.update(m, "") for m in (1.0, 2.0, 3.0, 4.0)]
    assert [e is not None for e in fired] == [False, False, True, False]
    assert fired[2].kind == MARGIN_DIVERGENCE and growth.growth == 1
