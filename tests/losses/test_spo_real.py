"""SPO against DPO on real preference data: bounded gradients and a margin that stops at its target.

From one start (a tiny Llama with SmolLM2's real 49,152-token vocabulary, random weights, which is
also the reference), the same 8 UltraFeedback pairs (two batches of 4, scores 1–10, truncated to
48 tokens) and the same AdamW learning rate, each loss trains 20 steps. DPO's log-ratio margin
keeps growing (its minimum is at Δ → ∞); SPO's stops near its target ``Δr/β`` (10 nats for the
average pair at the defaults), and SPO's largest pre-clip gradient norm stays within 1.5× DPO's.
"""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lit_align.data.collate import PreferenceCollator, Truncation, special_prefix, tokenize_row
from lit_align.data.formats import RowContext, normalize_row
from lit_align.losses import DPO, SPO, PreferenceLoss
from lit_align.models import CausalLMScorer
from lit_align.types import PreferenceBatch

pytestmark = pytest.mark.real

STEPS, PAIRS, BATCH, LR = 20, 8, 4, 1e-2


def real_batches(tokenizer, data_dir) -> list[PreferenceBatch]:
    """The first ``PAIRS`` usable training pairs, tokenised as ``--data`` would, in batches."""
    rows, prefix = [], special_prefix(tokenizer)
    with open(data_dir / "train.jsonl", encoding="utf-8") as f:
        for index, line in enumerate(f):
            row = normalize_row(
                json.loads(line), "conversational", RowContext("uf", "train", index), tokenizer
            )
            rows.append(tokenize_row(row, tokenizer, Truncation(max_length=48), prefix))
            if len(rows) == PAIRS:
                break
    collate = PreferenceCollator(tokenizer.pad_token_id)
    return [collate(rows[i : i + BATCH]) for i in range(0, PAIRS, BATCH)]


def train(loss: PreferenceLoss, start: dict, config: LlamaConfig, batches) -> dict[str, list]:
    """``STEPS`` AdamW steps from ``start``; pre-clip gradient norms, margins Δ and targets."""
    policy, reference = (CausalLMScorer(LlamaForCausalLM(config)) for _ in range(2))
    policy.model.load_state_dict(start)
    reference.model.load_state_dict(start)
    reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=LR, weight_decay=0.0)
    history = {"grad_norm": [], "margin": [], "target": []}
    for step in range(STEPS):
        batch = batches[step % len(batches)]
        logps = policy(batch)
        with torch.no_grad():
            ref = reference(batch)
        out = loss(logps, ref, batch)
        optimizer.zero_grad()
        out.loss.backward()
        history["grad_norm"].append(torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0))
        optimizer.step()
        rho_w, rho_l = (logps.sum - ref.sum).detach().chunk(2)
        history["margin"].append((rho_w - rho_l).mean().item())  # Δ in nats
        if out.target_margin is not None:
            history["target"].append((out.target_margin / loss.beta).mean().item())
    return history


@pytest.fixture(scope="module")
def runs(real_tokenizer, ultrafeedback) -> dict[str, dict[str, list]]:
    torch.manual_seed(0)
    batches = real_batches(real_tokenizer, ultrafeedback)
    config = LlamaConfig(
        vocab_size=len(real_tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    start = LlamaForCausalLM(config).state_dict()
    return {
        name: train(loss, start, config, batches) for name, loss in (("DPO", DPO()), ("SPO", SPO()))
    }


def test_spo_max_grad_norm_within_dpo(runs):
    spo, dpo = max(runs["SPO"]["grad_norm"]), max(runs["DPO"]["grad_norm"])
    assert spo <= 1.5 * dpo, f"SPO max grad norm {spo:.3g} vs DPO {dpo:.3g}"


def test_spo_margin_stays_near_target_while_dpo_grows(runs):
    spo, dpo = runs["SPO"]["margin"], runs["DPO"]["margin"]
    target = sum(runs["SPO"]["target"]) / STEPS  # ≈ 10 nats: Δr averages target_reward_gap
    late = spo[STEPS // 2 :]
    assert 0.5 * target <= min(late) and max(late) <= 1.5 * target, (spo, target)
    assert dpo[-1] > 4 * target and dpo[-1] > dpo[STEPS // 2] + target, dpo
