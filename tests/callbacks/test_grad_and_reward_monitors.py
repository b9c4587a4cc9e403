"""GradNormMonitor and RewardMarginMonitor in one real fit (SPO, so a target margin exists)."""

import math

import pytest
import torch
from lightning.pytorch import Callback
from monitor_runs import Probe, fit, tensorboard_log

from lit_align.callbacks import GradNormMonitor, RewardMarginMonitor
from lit_align.losses import SPO


class HandNorms(Callback):
    """Before each optimizer step: the global gradient norm summed by hand in float64, the
    module's ``grad_norm`` and the monitor's latest group norms."""

    def __init__(self, monitor: GradNormMonitor):
        self.monitor, self.rows = monitor, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad.double() for p in pl_module.policy.parameters() if p.grad is not None]
        hand = math.sqrt(sum(float((g * g).sum()) for g in grads))
        self.rows[trainer.global_step] = (hand, float(pl_module.grad_norm), self.monitor.last_norms)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four SPO steps, group norms every 2 steps, reward windows of 2 micro-batches."""
    tmp_path = tmp_path_factory.mktemp("monitors")
    grads = GradNormMonitor(group_every_n_steps=2, histograms=True)
    rewards = RewardMarginMonitor(window=2)
    hand, probe = HandNorms(grads), Probe()
    fit(tmp_path, [grads, rewards, hand, probe], steps=4, loss=SPO(beta=1.0), lr=0.01)
    return tmp_path, hand.rows, rewards, probe.records


def test_group_norms_add_up_to_the_hand_computed_global_norm(run):
    tmp_path, rows, _, _ = run
    for step in (0, 2):
        hand, module_norm, groups = rows[step]
        assert set(groups) == {"embeddings", "layers.0", "layers.1", "head"}
        assert module_norm == pytest.approx(hand, rel=1e-5)
        assert math.sqrt(sum(n * n for n in groups.values())) == pytest.approx(hand, rel=1e-5)
    assert rows[1][2] is rows[0][2]  # nothing computed on step 1
    log = tensorboard_log(tmp_path)
    assert [e.step for e in log.Scalars("grad_norm/layers.1")] == [0, 2]
    assert [e.value for e in log.Scalars("grad_norm/head")] == pytest.approx(
        [rows[0][2]["head"], rows[2][2]["head"]], rel=1e-6
    )
    assert len(log.Histograms("grad_norm/parameters")) == 2


def test_reward_windows_match_the_step_records(run):
    tmp_path, _, rewards, records = run
    last = records[2:]  # the second window: micro-batches 2 and 3
    margins = torch.cat([r.margins for r in last])  # (2B,)
    gap = margins - torch.cat([r.target_margin for r in last])
    chosen = torch.cat([r.chosen_logps for r in last])
    start = float(records[0].chosen_logps.mean())  # drift is measured from the first step
    quantiles = torch.quantile(margins, torch.tensor([0.1, 0.5, 0.9]))
    expected = {
        "margin": margins.mean(),
        "accuracy": (margins > 0).float().mean(),
        "target_signed": gap.mean(),
        "target_distance": gap.abs().mean(),
        "chosen_logps": chosen.mean(),
        "chosen_logps_drift": chosen.mean() - start,
        "margin_p10": quantiles[0],
        "margin_p50": quantiles[1],
        "margin_p90": quantiles[2],
    }
    for name, value in expected.items():
        assert rewards.last_values[f"preference/{name}"] == pytest.approx(float(value), abs=1e-5)
    log = tensorboard_log(tmp_path)
    assert len(log.Scalars("preference/target_distance")) == 2  # one point per window
    assert len(log.Histograms("preference/margins")) == 2


def test_unpaired_rows_of_equal_counts_get_no_invented_margin():
    """Four desirable and four undesirable rows are unrelated: group means, no margin/accuracy."""
    from lit_align.types import StepRecord

    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    record = StepRecord(torch.tensor(0.5), values, -values, values, -values, paired=False)
    monitor = RewardMarginMonitor(window=1)
    monitor._update(record)
    assert "chosen_rewards" in monitor._updated
    assert not {"margin", "accuracy", "target_distance"} & monitor._updated
