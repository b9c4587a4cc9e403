"""SFT: per-response token-mean NLL of the preferred responses."""

import pytest
import torch
from loss_inputs import from_sums, pair

from lit_align.losses import SFT


def test_paired_hand_value():
    """Chosen sums (−2, −9) over lengths (2, 3): c̄ = (−1, −3), ℓ = (1 + 3)/2 = 2.
    Rejected sums (−8, −4) over lengths (4, 2): r̄ = (−2, −2) are the reported rejected rewards."""
    lengths = torch.tensor([2, 3, 4, 2])
    policy, _, batch = pair(torch.tensor([-2.0, -9.0]), torch.tensor([-8.0, -4.0]), lengths=lengths)
    out = SFT()(policy, None, batch)
    assert out.loss.item() == pytest.approx(2.0, abs=1e-12)
    assert out.chosen_rewards.tolist() == [-1.0, -3.0]
    assert out.rejected_rewards.tolist() == [-2.0, -2.0]


def test_paired_gradient_only_on_chosen():
    """∂ℓ/∂c_i = −1/(B·|y_i|): (−1/4, −1/6); the rejected rows get no gradient."""
    sums = torch.tensor([-2.0, -9.0, -8.0, -4.0], dtype=torch.float64, requires_grad=True)
    policy, _, batch = from_sums(sums, lengths=torch.tensor([2, 3, 4, 2]))
    SFT()(policy, None, batch).loss.backward()
    torch.testing.assert_close(
        sums.grad, torch.tensor([-0.25, -1 / 6, 0.0, 0.0], dtype=torch.float64)
    )


def test_unpaired_divides_by_all_rows():
    """Rows c̄ = (−1, −2, −4), labels (T, F, T): ℓ = −(−1 − 4)/3 = 5/3."""
    sums = torch.tensor([-1.0, -2.0, -4.0], dtype=torch.float64)
    labels = torch.tensor([True, False, True])
    policy, _, batch = from_sums(sums, lengths=torch.ones(3, dtype=torch.long), labels=labels)
    out = SFT()(policy, None, batch)
    assert out.loss.item() == pytest.approx(5 / 3, abs=1e-12)
    assert out.chosen_rewards.tolist() == [-1.0, -4.0]
    assert out.rejected_rewards.tolist() == [-2.0]


def test_needs_no_reference():
    assert SFT.requires_reference is False
    assert SFT.supports_paired and SFT.supports_unpaired
