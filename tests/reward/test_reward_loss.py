"""The Bradley-Terry loss against values derived by hand."""

import math

import pytest
import torch

from lit_align.losses.base import LossConfigError
from lit_align.reward import BradleyTerryLoss
from lit_align.types import PreferenceBatch


def _batch(score_chosen=None, score_rejected=None) -> PreferenceBatch:
    ids = torch.zeros((4, 3), dtype=torch.long)  # 2 pairs; the loss reads only the scores
    scores = (score_chosen, score_rejected)
    chosen, rejected = (None if v is None else torch.tensor(v) for v in scores)
    return PreferenceBatch(ids, ids, ids.bool(), score_chosen=chosen, score_rejected=rejected)


def test_plain_bradley_terry():
    """r_w = (1, 0), r_l = (0, 0): the differences are (1, 0).

    −logσ(1) = log(1 + e^{−1}) = 0.3132617, −logσ(0) = ln 2 = 0.6931472; mean 0.5032044.
    d loss / d r_w = −σ(−(r_w − r_l)) / B = (−0.2689414 / 2, −0.5 / 2) = (−0.1344707, −0.25).
    Accuracy and margins are not the loss's business; it returns the rewards, detached.
    """
    chosen = torch.tensor([1.0, 0.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0])
    out = BradleyTerryLoss()(chosen, rejected, _batch())
    assert out.loss.item() == pytest.approx(0.5032044, abs=1e-6)
    out.loss.backward()
    torch.testing.assert_close(chosen.grad, torch.tensor([-0.1344707, -0.25]))
    torch.testing.assert_close(out.chosen_rewards, chosen.detach())
    assert not out.chosen_rewards.requires_grad


def test_margin_from_score_gap():
    """Scores (3, 1) vs (1, 1), margin_scale 0.5: m = 0.5·(2, 0) = (1, 0).

    With r_w = (1, 0), r_l = (0, 0) the margin cancels the first difference:
    −logσ(1 − 1) = ln 2 and −logσ(0 − 0) = ln 2, so the loss is ln 2 = 0.6931472.
    """
    loss = BradleyTerryLoss(margin_scale=0.5)
    batch = _batch([3.0, 1.0], [1.0, 1.0])
    out = loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), batch)
    assert out.loss.item() == pytest.approx(math.log(2), abs=1e-6)


def test_centering_term():
    """r_w = (1, 0), r_l = (0, 0), c = 0.1: (r_w + r_l)² = (1, 0), mean 0.5.

    Loss = 0.5032044 (the plain value) + 0.1·0.5 = 0.5532044.
    """
    loss = BradleyTerryLoss(center_rewards_coefficient=0.1)
    out = loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]), _batch())
    assert out.loss.item() == pytest.approx(0.5532044, abs=1e-6)


def test_wrong_order_costs_more():
    """r_w = −2, r_l = 0: −logσ(−2) = log(1 + e²) = 2.1269280."""
    ids = torch.zeros((2, 3), dtype=torch.long)
    batch = PreferenceBatch(ids, ids, ids.bool())
    out = BradleyTerryLoss()(torch.tensor([-2.0]), torch.tensor([0.0]), batch)
    assert out.loss.item() == pytest.approx(2.1269280, abs=1e-6)


def test_margin_without_scores_names_the_flag():
    with pytest.raises(ValueError, match=r"--model.loss.margin_scale > 0 .* no score_chosen"):
        BradleyTerryLoss(margin_scale=1.0)(torch.zeros(2), torch.zeros(2), _batch())


@pytest.mark.parametrize("flag", ["margin_scale", "center_rewards_coefficient"])
def test_negative_options_name_the_flag(flag):
    with pytest.raises(LossConfigError, match=rf"--model.loss.{flag} must be >= 0, got -1"):
        BradleyTerryLoss(**{flag: -1})
