"""Hand-derived values of the catalogue's losses.

Unless a test says otherwise the pair is c = −1, r = −3, c_ref = r_ref = −2 (ρ_w = 1, ρ_l = −1,
Δ = 2) with β = 0.5, so βρ_w = 0.5, βρ_l = −0.5, βΔ = 1. ``sp(x) = log(1 + e^x) = −logσ(−x)``.
"""

import math

import pytest
import torch
from loss_inputs import pair

from lit_align.losses import (
    AOT,
    CPO,
    DPO,
    DPOP,
    EXO,
    IPO,
    NCA,
    ORPO,
    RDPO,
    APODown,
    APOZero,
    BCOPair,
    DiscoPOP,
    Hinge,
    LossConfigError,
    RobustDPO,
    SigmoidNorm,
    SimPO,
    SPPOHard,
)


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def standard_pair(**kwargs):
    return pair(-1.0, -3.0, -2.0, -2.0, **kwargs)


LENGTHS = torch.tensor([2, 4])  # |y_w| = 2, |y_l| = 4


@pytest.mark.parametrize(
    "loss, expected",
    [
        # [(1−ε)·sp(−1) − ε·sp(1)]/(1 − 2ε) with ε = 0.1
        (RobustDPO(beta=0.5, label_smoothing=0.1), (0.9 * sp(-1) - 0.1 * sp(1)) / 0.8),
        (RobustDPO(beta=0.5), sp(-1)),  # ε = 0 is DPO
        (IPO(beta=0.5, normalize="sum"), 1.0),  # (Δ − 1/(2β))² = (2 − 1)²
        (Hinge(beta=0.5), 0.0),  # relu(1 − 1)
        (Hinge(beta=0.25), 0.5),  # relu(1 − 0.5)
        # KL((σ(1), σ(−1)) ‖ (0.9, 0.1))
        (
            EXO(beta=0.5, epsilon=0.1),
            sig(1) * (-sp(-1) - math.log(0.9)) + sig(-1) * (-sp(1) - math.log(0.1)),
        ),
        # sp(−0.5) + ½·sp(0.5) + ½·sp(−0.5)
        (NCA(beta=0.5), 1.5 * sp(-0.5) + 0.5 * sp(0.5)),
        # δ = mean(0.5, −0.5) = 0 after the first update: sp(−0.5) + sp(−0.5)
        (BCOPair(beta=0.5), 2 * sp(-0.5)),
        (SPPOHard(beta=0.5), 0.0),  # (1 − 1)² + (−1 + 1)²
        (SPPOHard(beta=0.25), 2.0),  # (1 − 2)² + (−1 + 2)²
        (APOZero(beta=0.5), 1 - sig(0.5) + sig(-0.5)),
        (APODown(beta=0.5), sig(0.5) + 1 - sig(1)),
        # m = σ(20): (1 − m)·sp(−1) + m·e^{−1}
        (DiscoPOP(beta=0.5), (1 - sig(20)) * sp(-1) + sig(20) * math.exp(-1)),
        (AOT(beta=0.5), sp(-1)),  # one pair: AOT is DPO
        (DPOP(beta=0.5), sp(-1)),  # c = −1 ≥ c_ref = −2: no penalty
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, torch.nn.Module) else "",
)
def test_standard_pair_values(loss, expected):
    out = loss(*standard_pair())
    assert out.loss.item() == pytest.approx(expected, abs=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([loss.beta])  # β·ρ_w with ρ_w = 1


def test_exo_is_zero_at_smoothed_target():
    """σ(βΔ) = 1 − ε when βΔ = log((1 − ε)/ε) = log 9 for ε = 0.1."""
    out = EXO(beta=1.0, epsilon=0.1)(*pair(math.log(9), 0.0))
    assert out.loss.item() == pytest.approx(0.0, abs=1e-12)


def test_discopop_at_zero_margin():
    """x = 0: m = ½, ℓ = ½·ln 2 + ½·e^0 = 0.8465736."""
    out = DiscoPOP()(*pair(-2.0, -2.0))
    assert out.loss.item() == pytest.approx(0.5 * math.log(2) + 0.5, abs=1e-12)


def test_ipo_mean_normalisation_and_target():
    """Lengths (2, 4): ρ̄_w = 0.5, ρ̄_l = −0.25, Δ̄ = 0.75; ℓ = (0.75 − 1)² = 0.0625;
    own rewards β·ρ̄ = (0.25, −0.125); the target β/(2β) = 0.5 is on per-token means, so none is
    reported (the standard rewards use sums); with normalize="sum" it is."""
    out = IPO(beta=0.5)(*standard_pair(lengths=LENGTHS))
    assert out.loss.item() == pytest.approx(0.0625, abs=1e-12)
    assert out.chosen_rewards.tolist() == [0.25]
    assert out.rejected_rewards.tolist() == [-0.125]
    assert out.target_margin is None
    assert IPO(beta=0.5, normalize="sum")(*standard_pair()).target_margin.tolist() == [0.5]


def test_sppo_target_margin_is_one():
    assert SPPOHard()(*standard_pair()).target_margin.tolist() == [1.0]


def test_sigmoid_norm_value():
    """Δ̄ = 0.75 as above: ℓ = sp(−0.5·0.75) = sp(−0.375)."""
    out = SigmoidNorm(beta=0.5)(*standard_pair(lengths=LENGTHS))
    assert out.loss.item() == pytest.approx(sp(-0.375), abs=1e-12)


def test_rdpo_value():
    """βΔ − α(|y_w| − |y_l|) = 1 − 0.1·(2 − 4) = 1.2: ℓ = sp(−1.2)."""
    out = RDPO(beta=0.5, alpha=0.1)(*standard_pair(lengths=LENGTHS))
    assert out.loss.item() == pytest.approx(sp(-1.2), abs=1e-12)


def test_dpop_penalty_value():
    """c = −3, c_ref = −2 (penalty 1), r = −5, r_ref = −2: Δ = −1 − (−3) = 2;
    β(Δ − λ·1) = 0.5·(2 − 2) = 0 with λ = 2: ℓ = ln 2."""
    out = DPOP(beta=0.5, lam=2.0)(*pair(-3.0, -5.0, -2.0, -2.0))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-12)


def test_aot_sorts_margins_across_the_batch():
    """c − r = (3, 1), c_ref − r_ref = (0, 2): sorted (1, 3) − (0, 2) = (1, 1), ℓ = sp(−1) at
    β = 1; DPO on the same pairs gives mean(sp(−3), sp(1))."""
    inputs = pair(
        torch.tensor([0.0, 0.0]), torch.tensor([-3.0, -1.0]), 0.0, torch.tensor([0.0, -2.0])
    )
    assert AOT(beta=1.0)(*inputs).loss.item() == pytest.approx(sp(-1), abs=1e-12)
    assert DPO(beta=1.0)(*inputs).loss.item() == pytest.approx((sp(-3) + sp(1)) / 2, abs=1e-12)


def test_simpo_value():
    """c̄ = −2/2 = −1, r̄ = −8/4 = −2, β = 2, γ = 1: 2·1 − 1 = 1, ℓ = sp(−1); rewards β·c̄."""
    policy, _, batch = pair(-2.0, -8.0, lengths=LENGTHS)
    out = SimPO()(policy, None, batch)
    assert out.loss.item() == pytest.approx(sp(-1), abs=1e-12)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (-2.0, -4.0)


def test_cpo_value():
    """β(c − r) = 0.5·6 = 3 and NLL = −c̄ = 1: ℓ = sp(−3) + 1; rewards β·c = −1, β·r = −4."""
    policy, _, batch = pair(-2.0, -8.0, lengths=LENGTHS)
    out = CPO(beta=0.5)(policy, None, batch)
    assert out.loss.item() == pytest.approx(sp(-3) + 1, abs=1e-12)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (-1.0, -4.0)


def test_orpo_value():
    """P_w = 0.5 (odds 1), P_l = 0.2 (odds 0.25): log_odds = log 4;
    ℓ = −log 0.5 − 0.1·logσ(log 4) = ln 2 + 0.1·ln 1.25."""
    policy, _, batch = pair(math.log(0.5), math.log(0.2), lengths=torch.tensor([1, 1]))
    out = ORPO(lam=0.1)(policy, None, batch)
    assert out.loss.item() == pytest.approx(math.log(2) + 0.1 * math.log(1.25), abs=1e-12)
    assert out.metrics["orpo/log_odds"].item() == pytest.approx(math.log(4), abs=1e-12)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (RobustDPO, {"label_smoothing": 0.5}, r"label_smoothing must be in \[0, 0\.5\)"),
        (IPO, {"normalize": "max"}, r"normalize must be one of"),
        (IPO, {"beta": 0}, r"beta must be > 0"),
        (EXO, {"epsilon": 0.0}, r"epsilon must be in \(0, 0\.5\)"),
        (DiscoPOP, {"tau": 0.0}, r"tau must be > 0"),
        (DPOP, {"lam": -1.0}, r"lam must be >= 0"),
        (RDPO, {"alpha": -1.0}, r"alpha must be >= 0"),
        (SimPO, {"gamma": -1.0}, r"gamma must be >= 0"),
        (SimPO, {"beta": -1.0}, r"beta must be > 0, got -1"),
        (CPO, {"alpha": -1.0}, r"alpha must be >= 0"),
        (ORPO, {"lam": -0.1}, r"lam must be >= 0"),
        (Hinge, {"beta": -2}, r"beta must be > 0, got -2"),
    ],
)
def test_rejects_invalid_hyperparameters(cls, kwargs, match):
    with pytest.raises(LossConfigError, match=r"^--model\.loss\." + match):
        cls(**kwargs)
