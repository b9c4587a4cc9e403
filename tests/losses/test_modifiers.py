"""The margin-loss modifiers: f-divergences, LD-DPO and WPO.

Unless a test says otherwise the pair has ρ_w = 1, ρ_l = −1 (reference log-probs 0), β = 1.
``sp(x) = log(1 + e^x) = −logσ(−x)``.
"""

import dataclasses
import math

import pytest
import torch
from loss_inputs import from_tokens, mask_from_lengths, pair

from lit_align.losses import AOT, DPO, IPO, SPO, LossConfigError, SigmoidNorm


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(
    "divergence, kwargs, delta_s",
    [
        ("reverse_kl", {}, 2.0),
        # s = log 2 + logσ(ρ): logσ(1) − logσ(−1) = 1
        ("js", {}, 1.0),
        # s = 1 − e^{−ρ}: (1 − e^{−1}) − (1 − e) = e − e^{−1}
        ("forward_kl", {}, math.e - math.exp(-1)),
        # s = (1 − e^{−ρ/2})/(1/2): 2(e^{1/2} − e^{−1/2})
        ("alpha", {"divergence_alpha": 0.5}, 2 * (math.exp(0.5) - math.exp(-0.5))),
    ],
)
def test_divergence_margin(divergence, kwargs, delta_s):
    out = DPO(beta=1.0, divergence=divergence, **kwargs)(*pair(1.0, -1.0))
    assert out.loss.item() == pytest.approx(sp(-delta_s), abs=1e-12)
    margin = (out.chosen_rewards - out.rejected_rewards).item()
    assert margin == pytest.approx(delta_s, abs=1e-12)


@pytest.mark.parametrize("divergence", ["reverse_kl", "js", "forward_kl", "alpha"])
def test_every_divergence_starts_at_ln2_with_zero_rewards(divergence):
    out = DPO(divergence=divergence)(
        *pair(torch.tensor([-3.0, -1.0]), -2.0, torch.tensor([-3.0, -1.0]), -2.0)
    )
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert out.chosen_rewards.abs().max().item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("divergence", ["forward_kl", "alpha"])
def test_exponential_divergences_stay_finite(divergence):
    """ρ_w = −1e4 would overflow e^{−ρ}; the tangent continuation keeps a finite push upwards."""
    c = torch.tensor([-1e4], requires_grad=True)
    out = DPO(divergence=divergence)(*pair(c, 0.0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(c.grad).all() and c.grad.item() < 0


def test_spo_with_divergence_targets_the_score_margin():
    """With an f-divergence the RLHF optimum is β(s_w − s_l) = Δr, so SPO's z uses the scores.
    JS with ρ_l = 0: s_w − s_l = logσ(ρ_w) + log 2, which is 0.1 = Δr/β (β = 10, Δr = 1) when
    σ(ρ_w) = e^{0.1}/2, i.e. ρ_w = 0.1 − log(2 − e^{0.1}); there z = 1 and ℓ = −e^{−1}/2."""
    rho_w = 0.1 - math.log(2 - math.exp(0.1))
    out = SPO(beta=10.0, divergence="js")(*pair(rho_w, 0.0))
    assert out.loss.item() == pytest.approx(-math.exp(-1) / 2, abs=1e-9)


def ld_inputs():
    """Chosen 2 tokens of −1, rejected 4 tokens of −1, reference 0: the public length is 2."""
    mask = mask_from_lengths(torch.tensor([2, 4]), 4)
    tokens = torch.full((2, 4), -1.0, dtype=torch.float64)
    return from_tokens(tokens, torch.zeros_like(tokens), mask)


def test_ld_alpha_hand_value():
    """Rejected becomes −2 + 0.5·(−2) = −3: Δ = −2 − (−3) = 1, ℓ = sp(−1) at β = 1;
    without LD-DPO Δ = −2 + 4 = 2."""
    loss = DPO(beta=1.0, ld_alpha=0.5)
    assert loss.needs_token_logps and not DPO.needs_token_logps
    assert loss(*ld_inputs()).loss.item() == pytest.approx(sp(-1), abs=1e-12)
    assert DPO(beta=1.0, ld_alpha=1.0)(*ld_inputs()).loss.item() == pytest.approx(sp(-2))


def test_ld_alpha_needs_token_logps():
    with pytest.raises(ValueError, match="ld_alpha needs per-token log-probs"):
        DPO(ld_alpha=0.5)(*pair(-1.0, -2.0))


def test_wpo_weight_hand_value():
    """Chosen: c = −4 over 4 tokens with Σ_t log Σp² = −2, aligned mean (−4 + 2)/4 = −0.5;
    rejected: r = −8, Σ_t log Σp² = −4, aligned −1: w = e^{−1.5} (detached); ℓ = w·sp(−1) with
    Δ = (−4 + 5) − (−8 + 7) = 2, β = 0.5."""
    c = torch.tensor([-4.0], dtype=torch.float64, requires_grad=True)
    policy, reference, batch = pair(c, -8.0, -5.0, -7.0)
    expected = torch.tensor([[-0.5] * 4, [-1.0] * 4], dtype=torch.float64)
    policy = dataclasses.replace(policy, token_log_expected_prob=expected)
    loss = DPO(beta=0.5, wpo=True)
    assert loss.needs_token_entropy  # the module then computes log Σp²
    out = loss(policy, reference, batch)
    assert out.loss.item() == pytest.approx(math.exp(-1.5) * sp(-1), abs=1e-12)
    out.loss.backward()
    assert c.grad.item() == pytest.approx(-math.exp(-1.5) * 0.5 / (1 + math.e), abs=1e-12)


def test_wpo_weight_is_clipped_at_one_and_needs_the_normaliser():
    policy, reference, batch = pair(-4.0, -8.0)
    big = dataclasses.replace(policy, token_log_expected_prob=torch.full((2, 4), -9.0))
    assert DPO(wpo=True)(big, reference, batch).loss.item() == pytest.approx(sp(-0.4), abs=1e-12)
    with pytest.raises(ValueError, match="wpo needs the policy's per-token log"):
        DPO(wpo=True)(policy, reference, batch)


@pytest.mark.parametrize(
    "build, flag",
    [
        (lambda: IPO(divergence="js"), "divergence"),
        (lambda: IPO(ld_alpha=0.5), "ld_alpha"),
        (lambda: SigmoidNorm(divergence="forward_kl"), "divergence"),
        (lambda: SigmoidNorm(ld_alpha=0.5), "ld_alpha"),
        (lambda: AOT(wpo=True), "wpo"),
        (lambda: AOT(divergence="js"), "divergence"),
    ],
)
def test_modifiers_rejected_where_meaningless(build, flag):
    with pytest.raises(
        LossConfigError, match=rf"^--model\.loss\.{flag} must be left at its default"
    ):
        build()


def test_modifiers_accepted_where_meaningful():
    IPO(normalize="sum", divergence="js", ld_alpha=0.5, wpo=True)
    SigmoidNorm(wpo=True)
    AOT(ld_alpha=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"divergence": "kl"}, r"divergence must be one of"),
        ({"divergence_alpha": 0.0}, r"divergence_alpha must be in \(0, 1\]"),
        ({"ld_alpha": 1.5}, r"ld_alpha must be in \[0, 1\], got 1\.5"),
    ],
)
def test_rejects_invalid_modifier_values(kwargs, match):
    with pytest.raises(LossConfigError, match=r"^--model\.loss\." + match):
        DPO(**kwargs)
