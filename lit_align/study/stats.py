"""Honest aggregates for the study: pooled Wilson intervals and t intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

from lit_align.eval.winrate import WinRate, mean_std, win_rate

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..10; the normal 1.96 beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean over seeds and the half-width of its 95% t interval (None for one seed: no spread
    was observed, so no interval is claimed).

    Raises:
        ValueError: If ``values`` is empty.
    """
    mean, std = mean_std(list(values))
    n = len(values)
    if n == 1:
        return mean, None
    t = _T95[n - 2] if n - 1 <= len(_T95) else 1.96
    return mean, t * std / math.sqrt(n)


def pooled(outcomes_per_seed: Sequence[Sequence[float]]) -> WinRate:
    """One win rate over every seed's judged outcomes (ties half), with its Wilson interval."""
    return win_rate([o for seed in outcomes_per_seed for o in seed])


def proportion(correct: int, n: int) -> WinRate:
    """A plain proportion (e.g. reward accuracy) with its Wilson interval, as a ``WinRate``."""
    return win_rate([1.0] * correct + [0.0] * (n - correct))


def overlap(a: WinRate, b: WinRate) -> bool:
    """Whether two 95% intervals overlap: the difference is then inside the noise."""
    return a.low <= b.high and b.low <= a.high
