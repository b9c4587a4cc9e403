"""The instability detectors: pure functions of floats with named state, no Trainer needed.

Each detector is fed one value (or one window's means) at a time and returns an
:class:`Event` or None. :class:`~lit_align.callbacks.instability.InstabilityMonitor` feeds them
and takes the actions of :mod:`lit_align.callbacks.instability_actions`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

NONFINITE_GRAD = "nonfinite_grad"
GRAD_SPIKE = "grad_spike"
NONFINITE_LOSS = "nonfinite_loss"
LOSS_SPIKE = "loss_spike"
MARGIN_DIVERGENCE = "margin_divergence"
LIKELIHOOD_DISPLACEMENT = "likelihood_displacement"
REJECTED_COLLAPSE = "rejected_collapse"

GRADIENT_KINDS = (NONFINITE_GRAD, GRAD_SPIKE)  # detected before the optimizer step
WINDOW_KINDS = (MARGIN_DIVERGENCE, LIKELIHOOD_DISPLACEMENT, REJECTED_COLLAPSE)
KINDS = (*GRADIENT_KINDS, NONFINITE_LOSS, LOSS_SPIKE, *WINDOW_KINDS)


@dataclass(frozen=True)
class Event:
    """What a detector saw: its kind, the value that crossed ``threshold`` (None: non-finite)."""

    kind: str
    value: float
    threshold: float | None
    detail: str = ""


def robust_z(value: float, history: Sequence[float]) -> float:
    """``(value − median) / (1.4826·MAD)`` over ``history``; the scale is floored at 1% of
    ``|median|`` (and 1e-12) so that a flat history does not make every change significant."""
    median = statistics.median(history)
    mad = statistics.median(abs(h - median) for h in history)
    return (value - median) / max(1.4826 * mad, 0.01 * abs(median), 1e-12)


@dataclass
class SpikeDetector:
    """A non-finite value, or a finite one whose :func:`robust_z` over recent values is a spike.

    Attributes:
        nonfinite_kind: the event kind of a NaN or infinite value.
        spike_kind: the event kind of a spike (valued by its z-score).
        threshold: the z-score that is a spike; None: spikes are not detected.
        window: recent finite values kept.
        min_history: values needed before spikes are detected.
        history: the recent finite values (state, checkpointed).
    """

    nonfinite_kind: str
    spike_kind: str
    threshold: float | None
    window: int
    min_history: int
    history: list[float] = field(default_factory=list)

    def update(self, value: float) -> Event | None:
        """Check ``value``, then remember it if finite."""
        if not math.isfinite(value):
            return Event(self.nonfinite_kind, value, None)
        event = None
        if self.threshold is not None and len(self.history) >= self.min_history:
            if (z := robust_z(value, self.history)) > self.threshold:
                median = statistics.median(self.history)
                detail = f"value {value:.4g}; median of the last {len(self.history)}: {median:.4g}"
                event = Event(self.spike_kind, z, self.threshold, detail)
        self.history = [*self.history, value][-self.window :]
        return event


@dataclass(frozen=True)
class WindowMeans:
    """Means over one window of micro-batches (log-probs are sequence sums, in nats)."""

    margin: float
    chosen: float
    rejected: float

    def describe(self) -> str:
        return (
            f"window means: margin {self.margin:.4g}, chosen {self.chosen:.4g}, "
            f"rejected {self.rejected:.4g}"
        )


@dataclass
class WindowAverage:
    """Sums of the finite micro-batch values of the current window (state, checkpointed)."""

    size: int
    margin: float = 0.0
    chosen: float = 0.0
    rejected: float = 0.0
    batches: int = 0

    def add(self, margin: float, chosen: float, rejected: float) -> WindowMeans | None:
        """Fold in one micro-batch; the window's means when it is full (then start afresh)."""
        self.margin, self.chosen, self.rejected = (
            self.margin + margin,
            self.chosen + chosen,
            self.rejected + rejected,
        )
        self.batches += 1
        if self.batches < self.size:
            return None
        n = self.batches
        means = WindowMeans(self.margin / n, self.chosen / n, self.rejected / n)
        self.margin = self.chosen = self.rejected = 0.0
        self.batches = 0
        return means


@dataclass
class LevelDetector:
    """``kind`` when a window's value exceeds ``threshold``, once until it falls back (re-armed).

    Attributes:
        kind: the event kind.
        threshold: the bound; None: never fires.
        holding: the condition held at the last window (state, checkpointed).
    """

    kind: str
    threshold: float | None
    holding: bool = False

    def update(self, value: float, detail: str) -> Event | None:
        if self.threshold is None or value <= self.threshold:
            self.holding = False
            return None
        if self.holding:
            return None
        self.holding = True
        return Event(self.kind, value, self.threshold, detail)


@dataclass
class MarginGrowthDetector:
    """``margin_divergence`` after ``windows`` window mean margins in a row each rose.

    Attributes:
        windows: rising windows that fire; None: never fires.
        last_margin: the previous window's mean margin (state).
        growth: rising windows in a row so far (state).
    """

    windows: int | None
    last_margin: float | None = None
    growth: int = 0

    def update(self, margin: float, detail: str) -> Event | None:
        rising = self.last_margin is not None and margin > self.last_margin
        self.growth, self.last_margin = (self.growth + 1 if rising else 0), margin
        if self.windows is None or self.growth < self.windows:
            return None
        event = Event(MARGIN_DIVERGENCE, self.growth, self.windows, f"rising; {detail}")
        self.growth = 0
        return event


@dataclass
class LogpStart:
    """The first window's chosen and rejected log-prob means, the displacement baselines."""

    chosen: float
    rejected: float


@dataclass
class WindowDetectors:
    """The window kinds over one window's means: margin bound, displacement, collapse, growth."""

    margin_bound: LevelDetector
    displacement: LevelDetector
    collapse: LevelDetector
    growth: MarginGrowthDetector
    start: LogpStart | None = None

    def update(self, means: WindowMeans) -> list[Event]:
        """The events of this window, in a fixed order (bound, displacement, collapse, growth)."""
        self.start = self.start or LogpStart(means.chosen, means.rejected)
        detail = means.describe()
        events = [
            self.margin_bound.update(abs(means.margin), detail),
            self.displacement.update(self.start.chosen - means.chosen, detail),
            self.collapse.update(self.start.rejected - means.rejected, detail),
            self.growth.update(means.margin, detail),
        ]
        return [event for event in events if event is not None]

    def levels(self) -> tuple[LevelDetector, ...]:
        return (self.margin_bound, self.displacement, self.collapse)
