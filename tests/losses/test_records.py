"""Standard metrics with TRL's meaning for every loss, own scales under a namespace, unpaired
rewards without an invented pairing, and SFT scoring only the chosen rows of paired data."""

import pytest
import torch
from loss_inputs import from_sums, pair

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.synthetic import make_rows
from lit_align.losses import BCO, DPO, IPO, SFT, SimPO
from lit_align.module import AlignmentModule
from lit_align.records import make_record, reward_metrics


def logged(loss, policy, reference, batch):
    """What the module logs for one step: standard metrics plus the loss's own."""
    out = loss(policy, reference, batch)
    record = make_record(out, policy, reference if loss.requires_reference else None, batch, loss)
    return {k: v.item() for k, v in {**reward_metrics(record), **record.metrics}.items()}


def test_dpo_rewards_are_beta_times_summed_logratios():
    """c = −4, r = −8 against c_ref = −5, r_ref = −6, β = 0.5: rewards 0.5 and −1, margin 1.5."""
    m = logged(DPO(beta=0.5), *pair(-4.0, -8.0, -5.0, -6.0))
    assert (m["rewards/chosen"], m["rewards/rejected"]) == (0.5, -1.0)
    assert (m["rewards/margins"], m["rewards/accuracies"]) == (1.5, 1.0)
    assert (m["logps/chosen"], m["logps/rejected"], m["logratios/margins"]) == (-4.0, -8.0, 3.0)
    assert not any("/rewards/" in k for k in m)  # DPO's own rewards are the standard ones


def test_length_normalised_losses_log_their_own_scale_under_a_namespace():
    """Sums −4 and −8 over 4 tokens (means −1, −2). SimPO β = 2: standard rewards β·c = −8 and
    −16; its own β·c̄ = −2 and −4 under simpo/. IPO (mean): standard β·ρ on sums, own on means."""
    m = logged(SimPO(beta=2.0), *pair(-4.0, -8.0))
    assert (m["rewards/chosen"], m["rewards/rejected"], m["rewards/margins"]) == (-8, -16, 8)
    assert (m["simpo/rewards/chosen"], m["simpo/rewards/margins"]) == (-2.0, 2.0)
    m = logged(IPO(beta=0.5), *pair(-4.0, -8.0))
    assert (m["rewards/margins"], m["ipo/rewards/margins"]) == (2.0, 0.5)


def test_unpaired_rewards_are_group_means_and_their_gap():
    """Three desirable rows (ρ = 1, 2, 3) and one undesirable (ρ = −2), β = 0.1: means 0.2 and
    −0.2, gap 0.4; no accuracy, since no row is paired with another."""
    policy, reference, batch = from_sums(
        torch.tensor([1.0, 2.0, 3.0, -2.0], dtype=torch.float64),
        labels=torch.tensor([True, True, True, False]),
    )
    m = logged(BCO(beta=0.1), policy, reference, batch)
    assert m["rewards/chosen"] == pytest.approx(0.2) and m["rewards/rejected"] == pytest.approx(
        -0.2
    )
    assert m["rewards/margins"] == pytest.approx(0.4)
    assert "rewards/accuracies" not in m


def test_unpaired_batch_with_one_side_only_logs_that_side():
    policy, reference, batch = from_sums(
        torch.tensor([1.0, 2.0], dtype=torch.float64), labels=torch.tensor([True, True])
    )
    m = logged(BCO(beta=1.0), policy, reference, batch)
    assert m["rewards/chosen"] == 1.5
    assert "rewards/rejected" not in m and "rewards/margins" not in m


def test_sft_on_paired_data_scores_only_the_chosen_rows(tiny_policy):
    """The policy sees B rows, not 2B, and the loss is the mean NLL of the chosen responses."""
    torch.manual_seed(0)
    module = AlignmentModule(policy=tiny_policy, loss=SFT())
    module.configure_model()
    tok = module.tokenizer
    rows = [tokenize_row(r, tok, Truncation(64)) for r in make_rows(4, seed=3)]
    batch = PreferenceCollator(tok.pad_token_id)(rows)  # 8 rows: 4 chosen, 4 rejected
    seen = []
    module.policy.register_forward_pre_hook(lambda _, args: seen.append(args[0].num_rows))
    out, record = module(batch)
    assert seen == [4]
    with torch.no_grad():
        full = module.policy(batch)
    chosen_mean = full.mean[:4].mean()
    assert out.loss.item() == pytest.approx(-chosen_mean.item(), rel=1e-6)
    assert record.chosen_logps.shape == (4,) and record.rejected_logps.numel() == 0
    assert SFT().capabilities()["needs_rejected"] is False
    assert DPO().capabilities()["needs_rejected"]
