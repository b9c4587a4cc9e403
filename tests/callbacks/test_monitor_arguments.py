"""Argument validation of the monitors, and their small pure helpers, against hand values."""

import pytest

from lit_align.callbacks import GradNormMonitor, InstabilityMonitor, RewardMarginMonitor
from lit_align.callbacks.grad_norm import group_of
from lit_align.callbacks.instability import robust_z


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: GradNormMonitor(group_every_n_steps=0), "group_every_n_steps must be >= 1, got 0"),
        (lambda: RewardMarginMonitor(window=0), "window must be >= 1, got 0"),
        (lambda: RewardMarginMonitor(quantiles=(0.5, 1.5)), r"quantiles must be in \[0, 1\]"),
        (lambda: InstabilityMonitor(grad_z_threshold=0), "grad_z_threshold must be > 0 or None"),
        (lambda: InstabilityMonitor(spike_min_history=60), r"spike_min_history must be in \[2"),
        (lambda: InstabilityMonitor(lr_factor=1.5), r"lr_factor must be in \(0, 1\), got 1.5"),
        (lambda: InstabilityMonitor(actions={"nan": "log"}), "actions must be keyed by kinds"),
        (
            lambda: InstabilityMonitor(actions={"grad_spike": "panic"}),
            r"actions\['grad_spike'\] must be one of \('log', 'skip_step'",
        ),
        (
            lambda: InstabilityMonitor(actions={"loss_spike": "skip_step"}),
            r"actions\['loss_spike'\] must be one of \('log', 'reduce_lr', 'rollback', 'stop'\)",
        ),
    ],
)
def test_bad_arguments_name_the_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_robust_z_by_hand():
    """history 1..5: median 3, |h − 3| = 2 1 0 1 2 → MAD 1, scale 1.4826; (10 − 3)/1.4826."""
    assert robust_z(10.0, [1, 2, 3, 4, 5]) == pytest.approx(7 / 1.4826)
    # flat history: MAD 0, the scale falls back to 1% of |median| = 0.02
    assert robust_z(2.1, [2.0] * 5) == pytest.approx(0.1 / 0.02)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("model.model.embed_tokens.weight", "embeddings"),
        ("model.model.layers.0.self_attn.q_proj.weight", "layers.0"),
        ("model.model.layers.11.mlp.down_proj.weight", "layers.11"),
        ("transformer.h.3.attn.c_attn.weight", "layers.3"),
        ("model.model.norm.weight", "head"),
        ("model.lm_head.weight", "head"),
    ],
)
def test_parameter_groups(name, group):
    assert group_of(name) == group
