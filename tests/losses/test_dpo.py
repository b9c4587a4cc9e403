"""DPO and cDPO against hand-derived numbers."""

import math

import pytest
import torch
from loss_inputs import pair

from lit_align.losses import DPO, LossConfigError


@pytest.mark.parametrize("beta", [0.01, 0.1, 2.0])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_dpo_is_ln2_when_policy_equals_reference(beta, label_smoothing):
    """Δ = 0 gives −(1−ε)·logσ(0) − ε·logσ(0) = ln 2 for every β and ε."""
    logps = torch.tensor([-3.0, -7.5, -0.2])
    out = DPO(beta=beta, label_smoothing=label_smoothing)(*pair(logps, logps - 1, logps, logps - 1))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert torch.equal(out.chosen_rewards, torch.zeros(3, dtype=torch.float64))
    assert out.target_margin is None


def test_dpo_hand_value_and_rewards():
    """c = −1, r = −3, c_ref = r_ref = −2, β = 0.5.

    ρ_w = 1, ρ_l = −1, Δ = 2, βΔ = 1: ℓ = −logσ(1) = log(1 + e^{−1}) = 0.3132616875;
    rewards β·ρ = (0.5, −0.5).
    """
    out = DPO(beta=0.5)(*pair(-1.0, -3.0, -2.0, -2.0))
    assert out.loss.item() == pytest.approx(0.3132616875182228, abs=1e-12)
    assert out.chosen_rewards.tolist() == [0.5]
    assert out.rejected_rewards.tolist() == [-0.5]


def test_cdpo_hand_value():
    """Same pair, ε = 0.1: (1−ε)·softplus(−x) + ε·softplus(x) = softplus(−x) + ε·x at x = 1,
    i.e. 0.3132616875 + 0.1 = 0.4132616875."""
    out = DPO(beta=0.5, label_smoothing=0.1)(*pair(-1.0, -3.0, -2.0, -2.0))
    assert out.loss.item() == pytest.approx(0.4132616875182228, abs=1e-12)


def test_dpo_gradient_hand_value():
    """∂ℓ/∂c = −β·σ(−βΔ) = −0.5·σ(−1) = −0.1344707; ∂ℓ/∂r = +0.1344707."""
    c = torch.tensor([-1.0], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([-3.0], dtype=torch.float64, requires_grad=True)
    DPO(beta=0.5)(*pair(c, r, -2.0, -2.0)).loss.backward()
    assert c.grad.item() == pytest.approx(-0.5 / (1 + math.e), abs=1e-12)
    assert r.grad.item() == pytest.approx(0.5 / (1 + math.e), abs=1e-12)


def test_dpo_batch_mean():
    """Two pairs with βΔ = 0 and βΔ = 1 average to (ln 2 + 0.3132616875)/2."""
    out = DPO(beta=1.0)(*pair(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])))
    assert out.loss.item() == pytest.approx((math.log(2) + 0.3132616875182228) / 2, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -1}, r"--model\.loss\.beta must be > 0, got -1"),
        ({"beta": 0.0}, r"--model\.loss\.beta must be > 0"),
        ({"label_smoothing": 0.5}, r"--model\.loss\.label_smoothing must be in \[0, 0\.5\)"),
        ({"label_smoothing": -0.1}, r"--model\.loss\.label_smoothing must be in \[0, 0\.5\)"),
    ],
)
def test_dpo_rejects_invalid_hyperparameters(kwargs, match):
    with pytest.raises(LossConfigError, match=match):
        DPO(**kwargs)
