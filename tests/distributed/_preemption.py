"""Test-only callbacks for SIGTERM runs of ``lit-align fit`` (``--trainer.callbacks+=``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import Checkpoint

WAIT_S = 120  # a paused run nobody signals exits by itself after this long


class PauseUntilSigterm(Callback):
    """Before the batch that makes optimizer step ``step + 1``, write ``<dirpath>/paused`` and
    wait until the process receives SIGTERM; the batch then trains as usual.

    Args:
        step: optimizer steps completed when the run pauses.
        dirpath: where the ``paused`` marker is written.
    """

    def __init__(self, step: int, dirpath: str) -> None:
        self.step, self.dirpath = step, Path(dirpath)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            _wait_for_sigterm(trainer, self.dirpath)


def _wait_for_sigterm(trainer: Trainer, dirpath: Path) -> None:
    """Write ``<dirpath>/paused``, then block until SIGTERM (bounded: exit 3 after WAIT_S)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / "paused").write_text(str(os.getpid()))
    deadline = time.monotonic() + WAIT_S
    while not trainer.received_sigterm:
        if time.monotonic() > deadline:
            os._exit(3)
        time.sleep(0.05)


class PauseAfterBatch(Checkpoint):
    """Like :class:`PauseUntilSigterm`, but at the end of the batch that made step ``step``,
    after every other callback's ``on_train_batch_end`` (Lightning runs ``Checkpoint``
    callbacks last): the signal arrives between two batches, as during a periodic save.

    Args:
        step: optimizer steps completed when the run pauses.
        dirpath: where the ``paused`` marker is written.
    """

    def __init__(self, step: int, dirpath: str) -> None:
        self.step, self.dirpath = step, Path(dirpath)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            _wait_for_sigterm(trainer, self.dirpath)
