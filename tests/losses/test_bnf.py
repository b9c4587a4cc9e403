"""BNF against its full-distribution definition, the weighted-NLL identity and hand values."""

import math

import pytest
import torch
import torch.nn.functional as F
from loss_inputs import from_tokens, make_batch, mask_from_lengths

from lit_align.losses import BNF, LossConfigError
from lit_align.losses.bnf import bnf_token_scores


def full_distribution_scores(logits, ref_logits, targets, mask, normalization, eps=0.0):
    """``(N,)`` sequence scores built from the definition over the whole vocabulary:
    ``q(y) = min(P/R, 1)``, ``q(v) = p(v)(1 − q(y))/(1 − P)``, ``S_t = Σ_v sg(q(v)) log p(v)``;
    with ``eps`` the first author's ``q(y) = min(P/(R + ε), 1)``,
    ``q(v) = p(v)(1 − q(y) + ε)/(1 − P + ε)``."""
    logp = F.log_softmax(logits, -1)  # (N, T, V)
    p = logp.exp()
    big_p = p.gather(-1, targets[..., None])  # (N, T, 1)
    big_r = F.softmax(ref_logits, -1).gather(-1, targets[..., None])
    a = torch.minimum(big_p / (big_r + eps), torch.ones_like(big_p))
    q = (p * (1 - a + eps) / (1 - big_p + eps)).scatter(-1, targets[..., None], a)
    s_t = (q.detach() * logp).sum(-1)  # (N, T)
    lengths = mask.sum(-1).to(logits.dtype)
    norm = lengths.min() if normalization == "min_in_batch" else lengths
    return (s_t * mask).sum(-1) / norm


def gathered_inputs(logits, ref_logits, targets, mask, **batch_kwargs):
    """What the training module hands BNF: gathered log-probs and the entropy without grad."""
    logp = F.log_softmax(logits, -1)
    tokens = logp.gather(-1, targets[..., None]).squeeze(-1)
    ref_tokens = F.log_softmax(ref_logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1).detach()
    return from_tokens(tokens, ref_tokens, mask, entropy=entropy, **batch_kwargs)


def random_case(num_rows=4, width=5, vocab=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(num_rows, width, vocab, generator=g, dtype=torch.float64)
    ref_logits = 2 * torch.randn(num_rows, width, vocab, generator=g, dtype=torch.float64)
    targets = torch.randint(0, vocab, (num_rows, width), generator=g)
    mask = mask_from_lengths(torch.randint(1, width + 1, (num_rows,), generator=g), width)
    return logits.requires_grad_(), ref_logits, targets, mask


@pytest.mark.parametrize("normalization", ["min_in_batch", "own_length"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paired_matches_full_distribution_value_and_gradient(normalization, seed):
    logits, ref_logits, targets, mask = random_case(seed=seed)
    scores = full_distribution_scores(logits, ref_logits, targets, mask, normalization)
    s_w, s_l = scores.chunk(2)
    expected = -(s_w - s_l).mean()
    (expected_grad,) = torch.autograd.grad(expected, logits)

    out = BNF(normalization)(*gathered_inputs(logits, ref_logits, targets, mask))
    (grad,) = torch.autograd.grad(out.loss, logits)
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("normalization", ["min_in_batch", "own_length"])
@pytest.mark.parametrize("seed", [0, 3])
def test_author_code_form_matches_its_equations(normalization, seed):
    """``form="author_code"`` against the author's equations with ε = 1e-6 over the whole
    vocabulary; in row 0, P ≈ 5e-8 < R ≈ 1.4e-7, where the ε terms matter."""
    logits, ref_logits, targets, mask = random_case(seed=seed)
    logits, ref_logits = logits.detach().clone(), ref_logits.clone()
    logits[0], ref_logits[0] = 0.0, 0.0
    logits[0].scatter_(-1, targets[0, :, None], -15.0)
    ref_logits[0].scatter_(-1, targets[0, :, None], -14.0)
    logits.requires_grad_()
    scores = full_distribution_scores(logits, ref_logits, targets, mask, normalization, eps=1e-6)
    s_w, s_l = scores.chunk(2)
    expected = -(s_w - s_l).mean()
    (expected_grad,) = torch.autograd.grad(expected, logits)

    inputs = gathered_inputs(logits, ref_logits, targets, mask)
    out = BNF(normalization, form="author_code")(*inputs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)
    exact = BNF(normalization)(*gathered_inputs(logits, ref_logits, targets, mask))
    assert abs(exact.loss.item() - out.loss.item()) > 1e-2  # the ε terms change the loss


def test_unpaired_matches_full_distribution_value_and_gradient():
    logits, ref_logits, targets, mask = random_case(num_rows=3, seed=5)
    signs = torch.tensor([True, False, True])
    scores = full_distribution_scores(logits, ref_logits, targets, mask, "own_length")
    expected = -((signs.double() * 2 - 1) * scores).mean()
    (expected_grad,) = torch.autograd.grad(expected, logits)

    inputs = gathered_inputs(logits, ref_logits, targets, mask, labels=signs)
    out = BNF("own_length")(*inputs)
    (grad,) = torch.autograd.grad(out.loss, logits)
    torch.testing.assert_close(out.loss, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert out.chosen_rewards.shape == (2,) and out.rejected_rewards.shape == (1,)


def test_gradient_equals_weighted_nll():
    """∇ BNF = ∇ of −(1/T)·Σ_t sg(w_t)·log P_t (per pair, chosen minus rejected), with
    w = 1 if P ≥ R else P(1 − R)/(R(1 − P)) computed here independently."""
    policy_tokens = torch.log(torch.rand(4, 5, dtype=torch.float64)).requires_grad_()
    ref_tokens = torch.log(torch.rand(4, 5, dtype=torch.float64))
    mask = mask_from_lengths(torch.tensor([5, 3, 4, 2]), 5)
    entropy = torch.rand(4, 5, dtype=torch.float64)
    out = BNF("own_length")(*from_tokens(policy_tokens, ref_tokens, mask, entropy=entropy))
    (grad,) = torch.autograd.grad(out.loss, policy_tokens)

    p, r = policy_tokens.detach().exp(), ref_tokens.exp()
    w = torch.where(p >= r, 1.0, p * (1 - r) / (r * (1 - p)))
    nll = -(w * policy_tokens * mask).sum(-1) / mask.sum(-1)  # (4,)
    surrogate = (nll[:2] - nll[2:]).mean()
    (expected,) = torch.autograd.grad(surrogate, policy_tokens)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-14)


def test_token_score_hand_value():
    """p = (0.5, 0.3, 0.2), label token 0, R = 0.8.

    a = min(0.5/0.8, 1) = 0.625; other tokens get q = p·(1 − 0.625)/(1 − 0.5) = 0.75·p = (0.225,
    0.15); S = 0.625·ln 0.5 + 0.225·ln 0.3 + 0.15·ln 0.2 = −0.9455266.
    w = P(1 − R)/(R(1 − P)) = 0.5·0.2/(0.8·0.5) = 0.25.
    """
    p = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    entropy = -(p * p.log()).sum().reshape(1, 1)
    logp = torch.tensor([[math.log(0.5)]], dtype=torch.float64, requires_grad=True)
    logr = torch.tensor([[math.log(0.8)]], dtype=torch.float64)
    scores, weights = bnf_token_scores(logp, logr, entropy)
    expected = 0.625 * math.log(0.5) + 0.225 * math.log(0.3) + 0.15 * math.log(0.2)
    assert scores.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(-0.9455266, abs=1e-7)
    assert weights.item() == pytest.approx(0.25, abs=1e-12)
    (grad,) = torch.autograd.grad(scores.sum(), logp)
    assert grad.item() == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize(
    "logp, logr, expected, weight",
    [
        (math.log(0.5), math.log(0.2), math.log(0.5), 1.0),  # P ≥ R: S = log P
        (0.0, -0.1, 0.0, 1.0),  # P = 1: (1 − a)/(1 − P) would be 0/0
        (-1e-9, 0.0, None, 0.0),  # R = 1: q = p, no gradient
        (-1e4, -1e4, -1e4, 1.0),
        (-1e4, 0.0, None, 0.0),
        (1e4, -1e4, 0.0, 1.0),  # invalid log-prob > 0 is clamped, stays finite
        (-3.0, -1e4, -3.0, 1.0),
    ],
)
def test_token_scores_finite_at_extremes(logp, logr, expected, weight):
    lp = torch.tensor([[logp]], dtype=torch.float32, requires_grad=True)
    scores, weights = bnf_token_scores(lp, torch.tensor([[logr]]), torch.tensor([[0.3]]))
    (grad,) = torch.autograd.grad(scores.sum(), lp)
    assert torch.isfinite(scores).all() and torch.isfinite(grad).all()
    assert weights.item() == pytest.approx(weight, abs=1e-6)
    if expected is not None:
        assert scores.item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def lengths_case(normalization):
    """Every token has log P = −1 > log R = −5, so S_t = −1; chosen lengths (2, 3), rejected
    lengths (4, 2)."""
    mask = mask_from_lengths(torch.tensor([2, 3, 4, 2]), 4)
    tokens = torch.full((4, 4), -1.0, dtype=torch.float64)
    inputs = from_tokens(tokens, tokens - 4, mask, entropy=torch.ones(4, 4, dtype=torch.float64))
    return BNF(normalization)(*inputs)


def test_own_length_normalization_hand_value():
    """S = −1 for every response: each pair's loss is −(−1 − (−1)) = 0."""
    assert lengths_case("own_length").loss.item() == 0.0


def test_min_in_batch_normalization_hand_value():
    """T_min = 2: S_w = (−1, −1.5), S_l = (−2, −1); losses (−1, 0.5), mean −0.25."""
    out = lengths_case("min_in_batch")
    assert out.loss.item() == pytest.approx(-0.25, abs=1e-12)
    assert out.chosen_rewards.tolist() == [8.0, 12.0]  # ρ = Σ(−1 − (−5))


def test_identical_pairs_are_masked():
    """Pair 0 holds the same tokens twice: it contributes 0; pair 1 gives −(−1 − (−2)) = −1;
    the mean over both pairs is −0.5."""
    mask = torch.ones(4, 1, dtype=torch.bool)
    tokens = torch.tensor([[-1.0], [-1.0], [-3.0], [-2.0]], dtype=torch.float64)
    ids = torch.tensor([[7], [8], [7], [9]])
    policy, reference, _ = from_tokens(tokens, tokens - 9, mask, entropy=torch.zeros(4, 1))
    out = BNF()(policy, reference, make_batch(mask, input_ids=ids))
    assert out.loss.item() == pytest.approx(-0.5, abs=1e-12)
    assert out.metrics["bnf/identical_pairs"].item() == 0.5


def test_unpaired_sign_hand_value():
    """S = (−1, −2), labels (desirable, undesirable): ℓ = −(1·(−1) + (−1)·(−2))/2 = −0.5."""
    tokens = torch.tensor([[-1.0], [-2.0]], dtype=torch.float64)
    mask = torch.ones(2, 1, dtype=torch.bool)
    labels = torch.tensor([True, False])
    inputs = from_tokens(tokens, tokens - 9, mask, entropy=torch.zeros(2, 1), labels=labels)
    assert BNF()(*inputs).loss.item() == pytest.approx(-0.5, abs=1e-12)


def test_rejects_invalid_form():
    with pytest.raises(LossConfigError, match=r"--model\.loss\.form must be one of"):
        BNF(form="paper")


def test_rejects_invalid_normalization():
    with pytest.raises(
        LossConfigError, match=r"--model\.loss\.length_normalization must be one of"
    ):
        BNF(length_normalization="mean")
