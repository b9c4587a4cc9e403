"""Test-only callback: records, per step, the ``loss`` the module logged and its local loss."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class LoggedLoss(Callback):
    """Writes ``<dirpath>/loss-rank<r>.json``: ``logged`` (what ``self.log("loss")`` reported,
    via ``trainer.callback_metrics``) and ``local`` (this rank's own batch loss), per step.

    Args:
        dirpath: where the per-rank files go.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.logged: list[float] = []
        self.local: list[float] = []

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.logged.append(float(trainer.callback_metrics["loss"]))
        self.local.append(float(outputs["record"].loss))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record = {"logged": self.logged, "local": self.local}
        (self.dirpath / f"loss-rank{trainer.global_rank}.json").write_text(json.dumps(record))
