"""SPO: minimum at the target margin, gradient bounded by β/2 everywhere, one scale for Δr."""

import math

import pytest
import torch
from loss_inputs import pair

from lit_align.losses import DPO, SPO, LossConfigError


def spo_at(delta, loss=None, **kwargs):
    """SPO output for pairs with ρ_w = Δ, ρ_l = 0 (reference log-probs 0)."""
    loss = loss or SPO()
    delta = torch.as_tensor(delta, dtype=torch.float64)
    return loss(*pair(delta, torch.zeros_like(delta), **kwargs))


def per_pair_grad(loss, delta, **kwargs):
    """``(∂ℓ_i/∂Δ_i)`` for the pairs of ``delta`` (the loss is a mean: scaled back by B)."""
    d = torch.as_tensor(delta, dtype=torch.float64).clone().requires_grad_()
    out = spo_at(d, loss=loss, **kwargs)
    out.loss.backward()
    return d.grad * d.numel(), out


def frozen_scale(mean: float, **kwargs) -> SPO:
    """An SPO in eval mode whose running mean positive score gap is ``mean``."""
    loss = SPO(**kwargs)
    loss.score_scale.mean.fill_(mean)
    loss.score_scale.count.fill_(1)
    return loss.eval()


def test_hand_values():
    """β = 0.1, Δr = 1: ℓ = (Δr/2)·g(βΔ). Δ = 10: z = 1, ℓ = −e^{−1}/2; Δ = 20: −e^{−2};
    Δ = −120: z = −12 on the linear part g = −z, ℓ = 6."""
    assert spo_at(10.0).loss.item() == pytest.approx(-math.exp(-1) / 2, abs=1e-12)
    assert spo_at(20.0).loss.item() == pytest.approx(-math.exp(-2), abs=1e-12)
    assert spo_at(0.0).loss.item() == 0.0
    assert spo_at(-120.0).loss.item() == pytest.approx(6.0, abs=1e-12)


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 10.0])
def test_gradient_bounded_by_half_beta_everywhere(beta):
    """|∂ℓ/∂Δ| ≤ β/2 for Δ ∈ [−1e4, 1e4] and Δr from 4e−4 to 4 (score gaps 0.01 to 100 over
    their mean 25.88), with finite values at ±1e4: DPO's gradient is β/2 at Δ = 0 and up to β."""
    grid = torch.cat([torch.linspace(-1e4, 1e4, 2001), torch.linspace(-50, 50, 1001)])
    gaps = torch.tensor([0.01, 0.5, 3.0, 100.0])
    delta = grid.double().repeat(len(gaps)).requires_grad_()  # (B,)
    score_w = gaps.double().repeat_interleave(len(grid))
    scores = (score_w, torch.zeros_like(score_w))
    loss = SPO(beta=beta)  # training mode: this batch sets the score scale
    policy, reference, batch = pair(delta, torch.zeros_like(delta), scores=scores)
    out = loss(policy, reference, batch)
    out.loss.backward()
    grad = delta.grad * delta.numel()
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    assert grad.abs().max().item() <= beta / 2 * (1 + 1e-5)
    assert grad.abs().max().item() >= beta / 2 * (1 - 1e-3)  # reached on the inverted side
    assert out.metrics["spo/score_fallback"].item() == 0.0


def test_bound_is_dpo_at_zero_margin_and_below_dpo_for_inverted_pairs():
    """At Δ = 0 both give −β/2; at Δ = −100 (β = 0.1) DPO gives −β·σ(10) ≈ −0.09999, SPO −β/2."""
    delta = [0.0, -100.0]
    spo, _ = per_pair_grad(SPO(), delta)
    d = torch.tensor(delta, dtype=torch.float64, requires_grad=True)
    DPO()(*pair(d, torch.zeros_like(d))).loss.backward()
    dpo = d.grad * 2
    assert spo.tolist() == pytest.approx([-0.05, -0.05], abs=1e-12)
    assert dpo.tolist() == pytest.approx([-0.05, -0.1 / (1 + math.exp(-10))], abs=1e-12)


@pytest.mark.parametrize(
    "beta, gap, expected_delta",
    [(0.1, None, 10.0), (0.1, 4.0, 20.0), (0.5, 6.0, 6.0), (2.0, 1.0, 0.25)],
)
def test_minimum_at_target_margin(beta, gap, expected_delta):
    """Running mean gap m = 2: Δr = gap/m (1 without scores); the minimum is at Δ* = Δr/β."""
    deltas = torch.linspace(-2 * expected_delta, 4 * expected_delta, 601, dtype=torch.float64)
    scores = None if gap is None else (torch.tensor([gap + 1.0]), torch.ones(1))
    loss = frozen_scale(2.0, beta=beta)
    outs = [spo_at([d], loss=loss, scores=scores) for d in deltas.tolist()]
    losses = torch.stack([o.loss for o in outs])
    assert deltas[losses.argmin()].item() == pytest.approx(expected_delta, rel=1e-6)
    assert outs[0].target_margin.item() == pytest.approx(1.0 if gap is None else gap / 2)


@pytest.mark.parametrize(
    "delta, sign", [(-1e4, -1), (-50.0, -1), (2.0, -1), (9.9, -1), (10.1, 1), (40.0, 1)]
)
def test_gradient_sign_on_both_sides_of_target(delta, sign):
    """Below Δ* = 10 the loss falls as Δ grows (∂ℓ/∂Δ < 0), above it rises (∂ℓ/∂Δ > 0)."""
    grad, _ = per_pair_grad(SPO(), [delta])
    assert torch.sign(grad).item() == sign


def test_gradient_vanishes_for_confident_pairs():
    """∂ℓ/∂Δ = (β/2)·(z − 1)e^{−z}; at z = 30 that is 0.05·29·e^{−30} ≈ 1.4e−13."""
    grad, _ = per_pair_grad(SPO(), [300.0])
    assert grad.item() == pytest.approx(0.05 * 29 * math.exp(-30), rel=1e-9)


def test_continuity_at_zero():
    """Value and slope agree just above and below z = 0 (the tangent continuation)."""
    grad, _ = per_pair_grad(SPO(), [1e-9, -1e-9])
    assert grad.tolist() == pytest.approx([-0.05, -0.05], rel=1e-6)
    assert spo_at([1e-9, -1e-9]).loss.item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c, r", [(-1e4, 1e4), (1e4, -1e4), (-1e4, -1e4), (0.0, 1e4)])
def test_finite_for_extreme_logps(c, r, dtype):
    """Loss and gradient stay finite; for inverted pairs the gradient still pushes Δ up."""
    cw = torch.tensor([c], dtype=dtype, requires_grad=True)
    rl = torch.tensor([r], dtype=dtype, requires_grad=True)
    out = SPO(alpha=0.5)(*pair(cw, rl))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(cw.grad).all()
    assert torch.isfinite(rl.grad).all()
    if c < r:
        assert cw.grad.item() < 0  # descent raises c


def test_score_scale_running_mean_fallbacks_and_metrics():
    """Batch 1 gaps (2, 0, −1, 4): positive mean 3, Δr = 2·(2/3, ·, ·, 4/3) with the tie and the
    inverted pair at target_reward_gap = 2; batch 2 gap 6 moves the mean to (2+4+6)/3 = 4."""
    loss = SPO(target_reward_gap=2.0)
    scores = (torch.tensor([3.0, 1.0, 0.0, 5.0]), torch.tensor([1.0, 1.0, 1.0, 1.0]))
    out = spo_at([0.0] * 4, loss=loss, scores=scores)
    assert out.target_margin.tolist() == pytest.approx([4 / 3, 2.0, 2.0, 8 / 3])
    m = out.metrics
    assert (m["spo/tied_scores"].item(), m["spo/inverted_scores"].item()) == (0.25, 0.25)
    assert (m["spo/score_fallback"].item(), m["spo/unscored"].item()) == (0.5, 0.0)
    assert m["spo/score_scale"].item() == pytest.approx(3.0)
    out = spo_at([0.0], loss=loss, scores=(torch.tensor([7.0]), torch.tensor([1.0])))
    assert out.metrics["spo/score_scale"].item() == pytest.approx(4.0)
    assert out.target_margin.item() == pytest.approx(3.0)
    loss.eval()
    spo_at([0.0], loss=loss, scores=(torch.tensor([101.0]), torch.tensor([1.0])))
    assert loss.score_scale.mean.item() == pytest.approx(4.0)  # frozen in eval mode
    restored = SPO()
    restored.load_state_dict(loss.state_dict())
    assert restored.score_scale.count.item() == 3


def test_unscored_pairs_share_the_scale():
    """Without scores (or with use_scores=False) every pair gets Δr = target_reward_gap: the
    gap of the average scored pair."""
    out = spo_at([10.0], loss=SPO(use_scores=False), scores=(torch.tensor([5.0]), torch.ones(1)))
    assert out.target_margin.tolist() == [1.0]
    assert out.metrics["spo/unscored"].item() == 1.0
    scored = spo_at([10.0], scores=(torch.tensor([9.0]), torch.ones(1)))  # its own mean: Δr = 1
    assert scored.target_margin.tolist() == [1.0]
    assert scored.loss.item() == pytest.approx(-math.exp(-1) / 2, abs=1e-12)


def test_alpha_penalty_hand_value():
    """ρ_w = 11, ρ_l = 1, β = 0.1, α = 2: ℓ = −e^{−1}/2 + 2·softplus(0.1)."""
    out = SPO(alpha=2.0)(*pair(11.0, 1.0))
    expected = -math.exp(-1) / 2 + 2 * math.log1p(math.exp(0.1))
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(1.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -1}, r"--model\.loss\.beta must be > 0, got -1"),
        ({"alpha": -0.1}, r"--model\.loss\.alpha must be >= 0"),
        ({"target_reward_gap": 0.0}, r"--model\.loss\.target_reward_gap must be > 0"),
        ({"wpo": True, "divergence": "kl"}, r"--model\.loss\.divergence must be one of"),
    ],
)
def test_rejects_invalid_hyperparameters(kwargs, match):
    with pytest.raises(LossConfigError, match=match):
        SPO(**kwargs)
