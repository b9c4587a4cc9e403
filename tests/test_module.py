"""AlignmentModule: reference handling, capabilities, the step, gradient norms, schedules."""

import math

import pytest
import torch

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.synthetic import make_rows
from lit_align.losses import DPO, SFT, SPO
from lit_align.module import AlignmentModule
from lit_align.optim import LRSchedule


def _batch(module, n=4):
    tok = module.tokenizer
    rows = [tokenize_row(r, tok, Truncation(64)) for r in make_rows(n, seed=3)]
    return PreferenceCollator(tok.pad_token_id)(rows)


def _module(tiny_policy, loss):
    torch.manual_seed(0)
    module = AlignmentModule(policy=tiny_policy, loss=loss)
    module.configure_model()
    return module


def test_dpo_starts_at_ln2_and_reference_is_not_saved(tiny_policy):
    module = _module(tiny_policy, DPO(beta=0.1))
    out, record = module(_batch(module))
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert torch.equal(record.chosen_rewards, torch.zeros(4))
    assert module.reference is not None
    assert not any(k.startswith("_reference") for k in module.state_dict())
    assert all(not p.requires_grad for p in module.reference.parameters())
    assert not module.reference.training and module.policy.training


def test_reference_free_loss_builds_no_reference(tiny_policy):
    module = _module(tiny_policy, SFT())
    assert module.reference is None
    out, record = module(_batch(module))
    assert torch.isfinite(out.loss) and record.log_ratio_margins is None


def test_log_ratio_margins_are_reward_margins_over_beta(tiny_policy):
    module = _module(tiny_policy, DPO(beta=0.25))
    with torch.no_grad():
        for p in module.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    _, record = module(_batch(module))
    assert record.log_ratio_margins.abs().max() > 0
    assert torch.allclose(record.log_ratio_margins * 0.25, record.margins, atol=1e-6)


def test_step_record_is_detached_and_shaped(tiny_policy):
    module = _module(tiny_policy, SPO(beta=1.0))
    batch = _batch(module, n=3)
    out, record = module(batch)
    assert out.loss.requires_grad
    for t in (record.loss, record.chosen_rewards, record.chosen_logps, record.rejected_logps):
        assert not t.requires_grad
    assert record.chosen_logps.shape == (3,) and record.margins.shape == (3,)
    # SPO reads the task's scores: target margin = score gap over the mean positive gap seen.
    gap = batch.score_chosen - batch.score_rejected
    expected = gap / gap[gap > 0].mean()
    assert torch.allclose(record.target_margin, expected)


def test_policy_logps_match_full_forward(tiny_policy):
    """The chunked scorer equals log_softmax over the HF model's full logits, response only."""
    module = _module(tiny_policy, DPO())
    batch = _batch(module)
    logps = module.policy(batch)
    logits = module.policy.model(batch.input_ids, attention_mask=batch.attention_mask).logits
    token = torch.log_softmax(logits[:, :-1].float(), -1)
    token = token.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    expected = (token * batch.response_mask[:, 1:]).sum(-1)
    assert torch.allclose(logps.sum, expected, atol=1e-5)
    assert torch.equal(logps.count, batch.response_mask[:, 1:].sum(-1).float())


@pytest.mark.parametrize(("decay", "at_end"), [("cosine", 0.1), ("linear", 0.1), ("constant", 1.0)])
def test_schedule_shapes(decay, at_end):
    f = LRSchedule(warmup_steps=4, decay=decay, min_lr_ratio=0.1).multiplier(20)
    assert f(0) == pytest.approx(1 / 5) and f(3) == pytest.approx(4 / 5)
    assert f(4) == pytest.approx(1.0)
    assert f(20) == pytest.approx(at_end)


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="--model.schedule.warmup_ratio must be in"):
        LRSchedule(warmup_ratio=1.5)


def test_chunk_size_validated(tiny_policy):
    with pytest.raises(ValueError, match="--model.logps_chunk_size must be >= 1, got 0"):
        AlignmentModule(policy=tiny_policy, logps_chunk_size=0)
