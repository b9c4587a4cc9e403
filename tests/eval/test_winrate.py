"""Tests of lit_align.eval.winrate against numbers derived by hand."""

from __future__ import annotations

import pytest

from lit_align.eval.winrate import WinRate, format_win_rate, mean_std, win_rate


def test_win_rate_seven_wins_two_ties_one_loss():
    """7 W, 2 T, 1 L: n = 10, successes = 7 + 2 / 2 = 8, p = 0.8; at 95%, z = 1.959964 and
    z^2 = 3.841459.

    denom  = 1 + z^2 / n = 1.3841459
    center = (0.8 + z^2 / 20) / denom = (0.8 + 0.1920729) / 1.3841459 = 0.7167401
    half   = z / denom * sqrt(0.8 * 0.2 / 10 + z^2 / 400)
           = 1.4160089 * sqrt(0.016 + 0.0096036) = 1.4160089 * 0.1600113 = 0.2265775
    interval = [0.4901625, 0.9433176]
    """
    w = win_rate([1.0] * 7 + [0.5] * 2 + [0.0])
    assert (w.wins, w.ties, w.losses, w.n, w.rate) == (7, 2, 1, 10, 0.8)
    assert w.low == pytest.approx(0.4901625, abs=1e-6)
    assert w.high == pytest.approx(0.9433176, abs=1e-6)
    assert format_win_rate(w) == "80.0% [49.0%, 94.3%] (n=10, 7 W / 2 T / 1 L)"


def test_wilson_at_the_boundary_and_other_confidence():
    """All 4 wins at 90%: z = 1.6448536, z^2 = 2.7055435, p = 1, so half = z^2 / (2n) / denom and

    low  = (1 + z^2 / (2n) - z^2 / (2n)) / denom = 1 / (1 + z^2 / n) = 4 / 6.7055435 = 0.5965213
    high = (1 + z^2 / n) / denom = 1
    """
    w = win_rate([1.0] * 4, confidence=0.90)
    assert w.low == pytest.approx(0.5965213, abs=1e-6)
    assert w.high == 1.0


def test_all_ties_is_centred():
    w = win_rate([0.5] * 6)
    assert w.rate == 0.5 and w.low == pytest.approx(1 - w.high)


@pytest.mark.parametrize(
    ("outcomes", "confidence", "match"),
    [
        ([], 0.95, "outcomes is empty"),
        ([1.0, 0.7], 0.95, r"outcomes must each be one of \(0.0, 0.5, 1.0\), got \[0.7\]"),
        ([1.0], 1.0, r"confidence must be in \(0, 1\), got 1.0"),
    ],
)
def test_win_rate_errors(outcomes, confidence, match):
    with pytest.raises(ValueError, match=match):
        win_rate(outcomes, confidence)


def test_format_win_rate_matches_the_documented_example():
    w = WinRate(wins=45, ties=10, losses=25, n=80, rate=0.625, low=0.5155, high=0.7231)
    assert format_win_rate(w) == "62.5% [51.5%, 72.3%] (n=80, 45 W / 10 T / 25 L)"


def test_mean_std():
    """Values 0.5, 0.6, 0.7: mean 0.6, sample variance (0.01 + 0 + 0.01) / 2 = 0.01, std 0.1."""
    mean, std = mean_std([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert mean_std([0.3]) == (0.3, 0.0)
    with pytest.raises(ValueError, match="values is empty"):
        mean_std([])
    assert mean_std([1.0, 1.0]) == (1.0, 0.0)
