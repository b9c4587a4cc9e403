"""What the monitors read from a run: the step's record and the run's TensorBoard writer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lit_align.types import StepRecord


def tensorboard(trainer: Trainer) -> Any | None:
    """The ``SummaryWriter`` of the trainer's first TensorBoard logger, or None without one.

    On ranks other than zero Lightning returns a no-op experiment, so callers need not check ranks.
    """
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def step_record(outputs: Any) -> StepRecord | None:
    """The :class:`~lit_align.types.StepRecord` of a ``training_step`` output, if it has one."""
    record = outputs.get("record") if isinstance(outputs, Mapping) else None
    return record if isinstance(record, StepRecord) else None
