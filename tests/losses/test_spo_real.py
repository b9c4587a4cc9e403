"""SPO against DPO on real preference data: bounded gradients and a margin that stops at its target.

From one start (a tiny Llama with SmolLM2's real 49,152-token vocabulary, random weights, which is
also the reference), the same 8 UltraFeedback pairs (two batches of 4, scores 1–10, truncated to
48 tokens) and the same AdamW learning rate, each loss trains 20 steps
(:mod:`lit_align.losses.stability`). DPO's log-ratio margin keeps growing (its minimum is at
Δ → ∞); SPO's stops near its target ``Δr/β`` (10 nats for the average pair at the defaults), and
SPO's largest pre-clip gradient norm stays within 1.5× DPO's.
"""

import pytest

from lit_align.losses import DPO, SPO
from lit_align.losses.stability import Setup, compare

pytestmark = pytest.mark.real

SETUP = Setup(steps=20, pairs=8, batch_size=4, lr=1e-2, max_length=48, hidden_size=16, layers=1)


@pytest.fixture(scope="module")
def runs(real_tokenizer, ultrafeedback):
    losses = {"DPO": DPO(), "SPO": SPO()}
    return compare(losses, real_tokenizer, ultrafeedback, SETUP, heldout=False)


def test_spo_max_grad_norm_within_dpo(runs):
    spo, dpo = max(runs["SPO"].grad_norm), max(runs["DPO"].grad_norm)
    assert spo <= 1.5 * dpo, f"SPO max grad norm {spo:.3g} vs DPO {dpo:.3g}"


def test_spo_margin_stays_near_target_while_dpo_grows(runs):
    spo, dpo = runs["SPO"].margin, runs["DPO"].margin
    target = sum(runs["SPO"].target) / SETUP.steps  # ≈ 10 nats: Δr averages target_reward_gap
    late = spo[SETUP.steps // 2 :]
    assert 0.5 * target <= min(late) and max(late) <= 1.5 * target, (spo, target)
    assert dpo[-1] > 4 * target and dpo[-1] > dpo[SETUP.steps // 2] + target, dpo
