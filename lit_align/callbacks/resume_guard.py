"""ResumeGuard: a run resumes only with the loss and data its checkpoint was trained on.

Every checkpoint records (under ``"lit_align_run"``) the loss (class and arguments), a
fingerprint of the tokenised training rows and the data module's settings that change the data
(all of ``--data.*`` but batching, workers and caches). Resuming with any of them different, e.g.
another loss, a replaced data file of the same length or a new ``--data.label_noise``, is
refused with the list of differences. Added by ``AlignmentModule.configure_callbacks``; to
resume anyway (each difference is then logged), add it yourself:
``--trainer.callbacks+=lit_align.callbacks.ResumeGuard --trainer.callbacks.allow_changes=true``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow as pa
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

KEY = "lit_align_run"
# How rows are batched and loaded, not which rows: a resume may change these (a 2-rank run
# resumed on 1 rank doubles batch_size); the loader's saved position is checked on its own.
NOT_DATA = (
    "batch_size",
    "eval_batch_size",
    "group_by_length",
    "packing",
    "max_tokens_per_batch",
    "num_workers",
    "num_proc",
    "cache_dir",
)
ALLOW = (
    "--trainer.callbacks+=lit_align.callbacks.ResumeGuard --trainer.callbacks.allow_changes=true"
)


class ResumeChangedError(ValueError):
    """The run differs from the one that wrote the checkpoint it resumes."""


class ResumeGuard(Callback):
    """Records the loss and data in checkpoints; refuses to resume with others.

    Args:
        allow_changes: resume even when they differ, logging each difference.
    """

    def __init__(self, allow_changes: bool = False) -> None:
        self.allow_changes = allow_changes
        self._fingerprint: str | None = None  # of this fit's training rows, computed once
        self._checked = False

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[KEY] = self.describe(trainer, pl_module)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self._checked:  # the module checks before its weights load (see check)
            self.check(trainer, pl_module, checkpoint)

    def check(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Refuse (or log) what differs from the run that wrote ``checkpoint``.

        :class:`~lit_align.module.AlignmentModule` calls this from its own
        ``on_load_checkpoint``, which Lightning runs before the weights load: a loss with other
        state (SPO's score scale, BCO's baseline) would otherwise fail on a missing key first.
        """
        self._checked = True
        saved = checkpoint.get(KEY)
        if saved is None:  # written before checkpoints recorded the run
            return
        changes = differences(saved, self.describe(trainer, pl_module))
        if not changes:
            return
        listed = "; ".join(changes)
        if not self.allow_changes:
            raise ResumeChangedError(
                f"--ckpt_path {trainer.ckpt_path} was trained with other settings: {listed}. "
                f"Resume with the same settings, or allow it with {ALLOW}"
            )
        rank_zero_warn(f"resuming {trainer.ckpt_path} with changed settings: {listed}")

    def describe(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """The loss, the data settings and the training rows' fingerprint of this run."""
        data = trainer.datamodule
        hparams = dict(getattr(data, "hparams", {}))
        rows = getattr(data, "train_data", None)
        if self._fingerprint is None and rows is not None:
            self._fingerprint = fingerprint(rows)
        return {
            "loss": loss_description(getattr(pl_module, "loss", None)),
            "data": {k: v for k, v in hparams.items() if k not in NOT_DATA},
            "data_fingerprint": self._fingerprint,
        }


def loss_description(loss: Any) -> str:
    """``Class(arg=value, ...)`` of a loss: its class path and public settings."""
    if loss is None:
        return "None"
    settings = {
        k: v
        for k, v in sorted(vars(loss).items())
        if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool))
    }
    args = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    return f"{type(loss).__module__}.{type(loss).__qualname__}({args})"


def fingerprint(rows: Any) -> str:
    """SHA-256 of a ``datasets.Dataset``'s rows in order (the Arrow data, serialised)."""
    table = rows.flatten_indices().data.table if rows._indices is not None else rows.data.table
    digest = hashlib.sha256()
    for batch in table.to_batches(max_chunksize=4096):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)  # only the batch's own values, also for sliced tables
        digest.update(sink.getvalue())
    return digest.hexdigest()[:16]


def differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``"what: saved -> now"`` for every recorded setting that changed."""
    changes = []
    for key in ("loss", "data_fingerprint"):
        if saved.get(key) != now.get(key):
            changes.append(f"{key.replace('_', ' ')}: {saved.get(key)} -> {now.get(key)}")
    old, new = saved.get("data", {}), now.get("data", {})
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changes.append(f"--data.{name}: {old.get(name)!r} -> {new.get(name)!r}")
    return changes
