"""Stateful and composite losses: BCO's running baseline, KTO's KL rows, WeightedSum."""

import math

import pytest
import torch
from loss_inputs import from_sums, pair

from lit_align.losses import BCO, BNF, DPO, KTO, SFT, BCOPair, LossConfigError, WeightedSum


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def unpaired(rho, labels):
    return from_sums(torch.tensor(rho, dtype=torch.float64), labels=torch.tensor(labels))


def test_bco_running_baseline_hand_values():
    """β = 0.5. Batch 1: rewards (0.5, −0.5), δ = 0: ℓ = (sp(−0.5) + sp(−0.5))/2.
    Batch 2: rewards (1.5, 1.5), δ = (0·2 + 3)/4 = 0.75: desirable sp(−0.75), undesirable
    sp(0.75), ℓ = (sp(−0.75) + sp(0.75))/2."""
    loss = BCO(beta=0.5).train()
    out = loss(*unpaired([1.0, -1.0], [True, False]))
    assert out.loss.item() == pytest.approx(sp(-0.5), abs=1e-12)
    out = loss(*unpaired([3.0, 3.0], [True, False]))
    assert out.metrics["bco/delta"].item() == pytest.approx(0.75)
    assert out.loss.item() == pytest.approx((sp(-0.75) + sp(0.75)) / 2, abs=1e-7)
    assert loss.baseline.count.item() == 4


def test_bco_baseline_frozen_in_eval_and_saved_in_state_dict():
    loss = BCO(beta=0.5).train()
    loss(*unpaired([3.0, 1.0], [True, False]))  # δ = 1
    state = loss.state_dict()
    assert state["baseline.mean"].item() == pytest.approx(1.0)
    assert state["baseline.count"].item() == 2
    loss.eval()
    loss(*unpaired([9.0, 9.0], [True, False]))
    assert loss.baseline.mean.item() == pytest.approx(1.0)
    restored = BCO(beta=0.5)
    restored.load_state_dict(state)
    assert restored.baseline.mean.item() == pytest.approx(1.0)


def test_bco_pair_uses_running_baseline():
    """After (0.5, −0.5) δ = 0; the next pair (βρ_w, βρ_l) = (2, 1) moves δ to 3/4:
    ℓ = sp(−(2 − 0.75)) + sp(1 − 0.75)."""
    loss = BCOPair(beta=0.5).train()
    loss(*pair(1.0, -1.0))
    out = loss(*pair(4.0, 2.0))
    assert out.loss.item() == pytest.approx(sp(-1.25) + sp(0.25), abs=1e-7)
    assert "baseline.mean" in loss.state_dict()


def kto_inputs(rho, labels, kl_rho):
    sums = torch.tensor(rho + kl_rho, dtype=torch.float64)
    return from_sums(sums, labels=torch.tensor(labels))


def test_kto_hand_value():
    """β = 1, ρ = (1, −1) labels (T, F), KL rows ρ = (0, 1): z = 0.5.
    desirable λ_D·(1 − σ(0.5)), undesirable 1 − σ(0.5 + 1); λ_D = 2:
    ℓ = (2·(1 − σ(0.5)) + (1 − σ(1.5)))/2."""
    out = KTO(beta=1.0, desirable_weight=2.0)(*kto_inputs([1.0, -1.0], [True, False], [0.0, 1.0]))
    sig = torch.sigmoid(torch.tensor([0.5, 1.5], dtype=torch.float64)).tolist()
    assert out.loss.item() == pytest.approx((2 * (1 - sig[0]) + (1 - sig[1])) / 2, abs=1e-12)
    assert out.metrics["kto/kl"].item() == pytest.approx(0.5)
    assert out.chosen_rewards.tolist() == [1.0] and out.rejected_rewards.tolist() == [-1.0]


def test_kto_kl_is_clamped_and_detached():
    """KL rows with mean ρ = −3 give z = 0; z carries no gradient to the KL rows."""
    sums = torch.tensor([1.0, -1.0, -3.0, -3.0], dtype=torch.float64, requires_grad=True)
    policy, reference, batch = from_sums(sums, labels=torch.tensor([True, False]))
    out = KTO()(policy, reference, batch)
    out.loss.backward()
    assert out.metrics["kto/kl"].item() == 0.0
    assert sums.grad[2:].abs().sum() == 0 and sums.grad[:2].abs().sum() > 0
    assert KTO.needs_kl_rows and not DPO().capabilities()["needs_kl_rows"]


def test_kto_rejects_missing_kl_rows():
    with pytest.raises(ValueError, match="KTO needs 2N rows"):
        KTO()(*unpaired([1.0, -1.0], [True, False]))


def test_weighted_sum_value_metrics_and_rewards():
    """DPO + 0.5·SFT at policy == reference: ln 2 + 0.5·(−c̄) with c̄ = −4/4 = −1."""
    loss = WeightedSum([DPO(), SFT()], [1.0, 0.5])
    out = loss(*pair(-4.0, -8.0, -4.0, -8.0))
    assert out.loss.item() == pytest.approx(math.log(2) + 0.5, abs=1e-12)
    assert out.metrics["loss/DPO"].item() == pytest.approx(math.log(2))
    assert out.metrics["loss/SFT"].item() == pytest.approx(1.0)
    assert out.chosen_rewards.tolist() == [0.0]  # DPO's β·ρ, not SFT's c̄


def test_weighted_sum_capabilities():
    loss = WeightedSum([SFT(), BNF()], [1.0, 1.0])
    assert loss.requires_reference and loss.needs_token_logps and loss.needs_token_entropy
    assert loss.supports_paired and loss.supports_unpaired
    assert not WeightedSum([SFT()], [1.0]).requires_reference
    assert not WeightedSum([DPO(), SFT()], [1.0, 1.0]).supports_unpaired
    assert WeightedSum([KTO(), KTO(beta=0.2)], [1.0, 1.0]).names == ["KTO_0", "KTO_1"]


def test_weighted_sum_state_is_saved():
    assert "losses.0.baseline.mean" in WeightedSum([BCOPair()], [1.0]).state_dict()


@pytest.mark.parametrize(
    "losses, weights, match",
    [
        ([], [], r"losses must name at least one loss"),
        ([DPO()], [1.0, 2.0], r"weights must hold one weight per loss \(1\), got 2"),
        ([DPO()], [-1.0], r"weights must be >= 0"),
        ([DPO(), KTO()], [1.0, 1.0], r"losses must share one batch layout"),
        ([KTO(), SFT()], [1.0, 1.0], r"losses must share one batch layout"),
    ],
)
def test_weighted_sum_rejects_invalid(losses, weights, match):
    with pytest.raises(LossConfigError, match=r"^--model\.loss\." + match):
        WeightedSum(losses, weights)


@pytest.mark.parametrize("cls", [BCO, KTO])
def test_unpaired_losses_reject_invalid_beta(cls):
    with pytest.raises(LossConfigError, match=r"--model\.loss\.beta must be > 0, got 0"):
        cls(beta=0)
