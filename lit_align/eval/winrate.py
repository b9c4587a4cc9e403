"""Win rates with Wilson score intervals, and mean / std over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

_OUTCOMES = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class WinRate:
    """Win rate of A over B with a confidence interval.

    Attributes:
        wins: Number of outcomes 1.0 (A better).
        ties: Number of outcomes 0.5.
        losses: Number of outcomes 0.0 (B better).
        n: Number of outcomes.
        rate: ``(wins + ties / 2) / n``.
        low: Lower end of the Wilson score interval on ``rate``.
        high: Upper end of the Wilson score interval on ``rate``.
    """

    wins: float
    ties: float
    losses: float
    n: int
    rate: float
    low: float
    high: float


def win_rate(outcomes: list[float], confidence: float = 0.95) -> WinRate:
    """Aggregate judge outcomes into a win rate with a Wilson score interval.

    A tie counts as half a win. The interval is Wilson's (1927) for a binomial proportion with
    ``successes = wins + ties / 2`` out of ``n`` trials, with ``z`` the two-sided normal quantile
    of ``confidence``::

        p = successes / n
        center = (p + z^2 / (2n)) / (1 + z^2 / n)
        half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

    Keeping ``n`` (rather than dropping ties) is the usual reporting convention; it treats a tie
    as a coin flip, so it slightly overstates the variance when ties are many (the interval is a
    little conservative). Unlike the normal approximation, Wilson stays inside [0, 1] and is not
    zero-width at rates of 0 or 1.

    Args:
        outcomes: Judge outcomes, each 0.0, 0.5 or 1.0 (as from ``Judge.compare``).
        confidence: Interval coverage, in (0, 1).

    Returns:
        The counts, the rate and its interval.

    Raises:
        ValueError: If ``outcomes`` is empty or holds another value, or ``confidence`` is out
            of range.
    """
    if not outcomes:
        raise ValueError("outcomes is empty; need at least one judged pair for a win rate")
    bad = [o for o in outcomes if o not in _OUTCOMES]
    if bad:
        raise ValueError(f"outcomes must each be one of {_OUTCOMES}, got {bad[:5]}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(outcomes)
    wins, ties = float(outcomes.count(1.0)), float(outcomes.count(0.5))
    rate = (wins + ties / 2) / n
    low, high = _wilson(rate, n, NormalDist().inv_cdf(0.5 + confidence / 2))
    return WinRate(wins, ties, n - wins - ties, n, rate, low, high)


def _wilson(p: float, n: int, z: float) -> tuple[float, float]:
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)  # clamp float rounding only


def format_win_rate(w: WinRate) -> str:
    """Format e.g. ``"62.5% [51.5%, 72.3%] (n=80, 45 W / 10 T / 25 L)"``."""
    return (
        f"{w.rate:.1%} [{w.low:.1%}, {w.high:.1%}] "
        f"(n={w.n}, {w.wins:g} W / {w.ties:g} T / {w.losses:g} L)"
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``n - 1`` divisor) of per-seed results.

    A single value has standard deviation 0.0 (no spread observed).

    Raises:
        ValueError: If ``values`` is empty.
    """
    if not values:
        raise ValueError("values is empty; need at least one result to aggregate")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)
