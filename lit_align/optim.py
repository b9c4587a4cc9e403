"""Learning-rate schedule: linear warm-up then cosine, linear or constant decay."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class LRSchedule:
    """Multiplier of the optimizer's learning rate over the optimizer steps of a run.

    Attributes:
        warmup_ratio: fraction of all optimizer steps spent warming up linearly from 0.
        warmup_steps: warm-up length in steps; overrides ``warmup_ratio`` when set.
        decay: shape after warm-up: ``cosine`` or ``linear`` down to ``min_lr_ratio``, or
            ``constant``.
        min_lr_ratio: final learning rate as a fraction of the peak.
    """

    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(
                f"--model.schedule.warmup_ratio must be in [0, 1), got {self.warmup_ratio}"
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"--model.schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(
                f"--model.schedule.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
            )

    def multiplier(self, total_steps: int) -> Callable[[int], float]:
        """A ``LambdaLR`` function for a run of ``total_steps`` optimizer steps."""
        total = max(int(total_steps), 1)
        warmup = (
            self.warmup_steps if self.warmup_steps is not None else int(self.warmup_ratio * total)
        )
        floor = self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if self.decay == "constant":
                return 1.0
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            shape = (
                0.5 * (1 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1 - progress
            )
            return floor + (1 - floor) * shape

        return factor
