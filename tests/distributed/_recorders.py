"""Test-only callbacks for runs of the real ``lit-align fit`` command (``--trainer.callbacks+=``).

The launching tests put this directory on ``PYTHONPATH``, so ``_recorders.BatchFingerprints``
etc. resolve as class paths. Each stall blocks (bounded) at a chosen point of training after
writing a marker file, so a test can SIGKILL the run at a known point instead of racing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.distributed.checkpoint import FileSystemWriter

STALL_S = 300  # a stalled run nobody killed exits by itself after this long


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def row_fingerprints(input_ids: Any, attention_mask: Any) -> list[str]:
    """One short hash per row of its real tokens (padding differs between batch layouts)."""
    rows = zip(input_ids.cpu(), attention_mask.cpu().bool())
    return [hashlib.sha1(ids[mask].numpy().tobytes()).hexdigest()[:12] for ids, mask in rows]


class BatchFingerprints(Callback):
    """Appends one JSON line per training batch to ``<dirpath>/batches-rank<r>.jsonl``.

    Written before the batch trains (``step`` is the optimizer steps completed so far), one
    ``open``/``close`` per line, so the file survives a SIGKILL of the process.

    Args:
        dirpath: where the per-rank files go.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        record = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "batch": batch_idx,
            "rows": row_fingerprints(batch.input_ids, batch.attention_mask),
        }
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / f"batches-rank{_rank()}.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


def _stall(marker: Path) -> None:
    """Write ``marker`` and block until killed (bounded: exit 3 after ``STALL_S``)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    time.sleep(STALL_S)
    os._exit(3)


class StallAtStep(Callback):
    """Blocks before the batch that would make optimizer step ``step + 1`` (between saves).

    Args:
        step: optimizer steps completed when the run stalls.
        dirpath: where ``stalled-rank<r>`` is written when it does.
    """

    def __init__(self, step: int, dirpath: str) -> None:
        self.step, self.dirpath = step, Path(dirpath)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            _stall(self.dirpath / f"stalled-rank{_rank()}")


class StallInSave(Callback):
    """Blocks inside the ``occurrence``-th distributed save whose directory contains ``name``.

    Each rank blocks right after writing its own shard file, before the coordinator writes
    ``.metadata``: a crash there is a crash in the middle of the save.

    Args:
        name: part of the checkpoint directory's name (``last.ckpt`` matches its staging dir).
        occurrence: which matching save to block in (1 = the first).
        dirpath: where ``stalled-rank<r>`` is written when it does.
    """

    def __init__(self, name: str, occurrence: int, dirpath: str) -> None:
        self.name, self.occurrence, self.dirpath = name, occurrence, Path(dirpath)
        self.seen = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        write_data, callback = FileSystemWriter.write_data, self

        def write_then_maybe_stall(writer: FileSystemWriter, *args: Any, **kwargs: Any) -> Any:
            written = write_data(writer, *args, **kwargs)  # this rank's shard file is complete
            if callback.name in Path(writer.path).name:
                callback.seen += 1
                if callback.seen == callback.occurrence:
                    _stall(callback.dirpath / f"stalled-rank{_rank()}")
            return written

        FileSystemWriter.write_data = write_then_maybe_stall
