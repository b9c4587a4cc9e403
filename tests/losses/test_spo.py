"""SPO: the minimum sits at the target margin, gradients have the right sign and stay finite."""

import math

import pytest
import torch
from loss_inputs import pair

from lit_align.losses import SPO, LossConfigError


def spo_at(delta, loss=None, **kwargs):
    """SPO output for pairs with ρ_w = Δ, ρ_l = 0 (reference log-probs 0)."""
    loss = loss or SPO()
    delta = torch.as_tensor(delta, dtype=torch.float64)
    return loss(*pair(delta, torch.zeros_like(delta), **kwargs))


def test_hand_values():
    """β = 0.1, Δr = 1: Δ = 10 gives z = 1, ℓ = −e^{−1}; Δ = 20 gives z = 2, ℓ = −2e^{−2}."""
    assert spo_at(10.0).loss.item() == pytest.approx(-math.exp(-1), abs=1e-12)
    assert spo_at(20.0).loss.item() == pytest.approx(-2 * math.exp(-2), abs=1e-12)
    assert spo_at(0.0).loss.item() == 0.0


def test_linear_continuation_below_z_min():
    """z = −12 < z_min = −10: f(−10) + f'(−10)·(−2) = 10e^{10} + (−11e^{10})(−2) = 32e^{10}."""
    out = spo_at(-120.0)
    assert out.loss.item() == pytest.approx(32 * math.exp(10), rel=1e-12)


@pytest.mark.parametrize(
    "beta, gap, expected_delta",
    [(0.1, None, 10.0), (0.1, 2.0, 20.0), (0.5, 3.0, 6.0), (2.0, 0.5, 0.25)],
)
def test_minimum_at_target_margin(beta, gap, expected_delta):
    """Scanning Δ on a grid, the loss is smallest at Δ* = Δr/β (Δr = 1 without scores)."""
    deltas = torch.linspace(-2 * expected_delta, 4 * expected_delta, 601, dtype=torch.float64)
    scores = None if gap is None else (torch.tensor([gap + 1.0]), torch.tensor([1.0]))
    per_pair = [spo_at([d], loss=SPO(beta=beta), scores=scores) for d in deltas.tolist()]
    losses = torch.stack([o.loss for o in per_pair])
    assert deltas[losses.argmin()].item() == pytest.approx(expected_delta, rel=1e-6)
    assert per_pair[0].target_margin.item() == pytest.approx(1.0 if gap is None else gap)


@pytest.mark.parametrize("delta, sign", [(-50.0, -1), (2.0, -1), (9.9, -1), (10.1, 1), (40.0, 1)])
def test_gradient_sign_on_both_sides_of_target(delta, sign):
    """Below Δ* = 10 the loss falls as Δ grows (∂ℓ/∂Δ < 0), above it rises (∂ℓ/∂Δ > 0)."""
    d = torch.tensor(delta, dtype=torch.float64, requires_grad=True)
    spo_at(d).loss.backward()
    assert torch.sign(d.grad).item() == sign


def test_gradient_vanishes_for_confident_pairs():
    """∂ℓ/∂Δ = (β/Δr)·(z − 1)e^{−z}; at z = 30 that is 0.1·29·e^{−30} ≈ 2.7e−13."""
    d = torch.tensor(300.0, dtype=torch.float64, requires_grad=True)
    spo_at(d).loss.backward()
    assert d.grad.item() == pytest.approx(0.1 * 29 * math.exp(-30), rel=1e-9)
    assert abs(d.grad.item()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c, r", [(-1e4, 1e4), (1e4, -1e4), (-1e4, -1e4), (0.0, 1e4)])
def test_finite_for_extreme_logps(c, r, dtype):
    """Loss and gradient stay finite; for inverted pairs the gradient still pushes Δ up."""
    cw = torch.tensor([c], dtype=dtype, requires_grad=True)
    rl = torch.tensor([r], dtype=dtype, requires_grad=True)
    policy, reference, batch = pair(cw, rl)
    out = SPO(alpha=0.5)(policy, reference, batch)
    out.loss.backward()
    assert (
        torch.isfinite(out.loss) and torch.isfinite(cw.grad).all() and torch.isfinite(rl.grad).all()
    )
    if c < r:
        assert cw.grad.item() < 0  # descent raises c


def test_continuity_at_z_min():
    """Value and slope agree just above and below z_min (the tangent continuation)."""
    grads, values = [], []
    for delta in (-100.0 + 1e-7, -100.0 - 1e-7):  # z = βΔ = −10 ± 1e−8
        d = torch.tensor(delta, dtype=torch.float64, requires_grad=True)
        loss = spo_at(d).loss
        loss.backward()
        values.append(loss.item())
        grads.append(d.grad.item())
    assert values[0] == pytest.approx(values[1], rel=1e-7)  # slope·2e−7 ≈ 5e−3 apart
    assert grads[0] == pytest.approx(grads[1], rel=1e-6)


def test_score_based_target_with_fallback():
    """Gaps (2, 0, −1): the tie and the inverted pair fall back to target_reward_gap = 4."""
    scores = (torch.tensor([3.0, 1.0, 0.0]), torch.tensor([1.0, 1.0, 1.0]))
    out = spo_at([20.0, 40.0, 40.0], loss=SPO(target_reward_gap=4.0), scores=scores)
    assert out.target_margin.tolist() == [2.0, 4.0, 4.0]
    assert out.loss.item() == pytest.approx(-math.exp(-1), abs=1e-12)  # every z = 1
    assert out.metrics["spo/score_fallback"].item() == pytest.approx(2 / 3)
    assert out.metrics["spo/z_mean"].item() == pytest.approx(1.0)


def test_use_scores_false_ignores_scores():
    scores = (torch.tensor([5.0]), torch.tensor([1.0]))
    out = spo_at([10.0], loss=SPO(use_scores=False), scores=scores)
    assert out.target_margin.tolist() == [1.0]
    assert out.loss.item() == pytest.approx(-math.exp(-1), abs=1e-12)


def test_alpha_penalty_hand_value():
    """ρ_w = 11, ρ_l = 1, β = 0.1, α = 2: ℓ = −e^{−1} + 2·softplus(0.1) = −0.3678794 + 1.3887933."""
    out = SPO(alpha=2.0)(*pair(11.0, 1.0))
    expected = -math.exp(-1) + 2 * math.log1p(math.exp(0.1))
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(1.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -1}, r"--model\.loss\.beta must be > 0, got -1"),
        ({"alpha": -0.1}, r"--model\.loss\.alpha must be >= 0"),
        ({"target_reward_gap": 0.0}, r"--model\.loss\.target_reward_gap must be > 0"),
        ({"z_min": 1.0}, r"--model\.loss\.z_min must be in \[-50, 1\)"),
        ({"z_min": -60.0}, r"--model\.loss\.z_min must be in \[-50, 1\)"),
    ],
)
def test_rejects_invalid_hyperparameters(kwargs, match):
    with pytest.raises(LossConfigError, match=match):
        SPO(**kwargs)
