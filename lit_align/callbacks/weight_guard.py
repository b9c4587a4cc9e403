"""WeightGuard: checks what a run resumes from and what it writes.

Added by ``AlignmentModule.configure_callbacks`` to every fit:

* at setup: what interrupted saves left in the checkpoint directory is cleaned (``.partial``
  removed, ``.old`` restored; ``--ckpt_path`` itself is checked by the CLI,
  :class:`~lit_align.checkpointing.CheckpointArguments`);
* after the model is built and restored: its weights must be finite, and checkpoints saved
  after the resumed step by the interrupted run (orphans no callback tracks) are removed;
* before every checkpoint is written: the weights must be finite, so a diverged model never
  replaces a good checkpoint and the run stops, non-zero, naming the step and the tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

from lit_align import checkpointing
from lit_align.finite import require_finite_on_all_ranks

DIVERGED = (
    "the run diverged: lower --optimizer.init_args.lr, set --trainer.gradient_clip_val, or add "
    "lit_align.callbacks.InstabilityMonitor; the last checkpoint written is the last good one"
)


class WeightGuard(Callback):
    """Cleans interrupted saves; refuses non-finite weights (see the module docstring)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        callback = trainer.checkpoint_callback
        if trainer.is_global_zero and isinstance(callback, ModelCheckpoint) and callback.dirpath:
            for path in checkpointing.clean_leftovers(Path(callback.dirpath)):
                rank_zero_info(f"removed {path}, left by an interrupted save")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path and trainer.is_global_zero:
            _remove_orphans(trainer)
        source = trainer.ckpt_path or "the initial weights"
        hint = "the checkpoint or weight files are damaged"
        require_finite_on_all_ranks(pl_module, f"loaded from {source}", hint, trainer.strategy)

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        what = f"step {trainer.global_step}: refused to save a checkpoint"
        require_finite_on_all_ranks(pl_module, what, DIVERGED, trainer.strategy)


def _remove_orphans(trainer: Trainer) -> None:
    """Delete checkpoints newer than the resumed step that the restored callbacks never saw."""
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint) or callback.dirpath is None:
            continue
        known = {*callback.best_k_models, callback.last_model_path, str(trainer.ckpt_path)}
        for path in checkpointing.orphans(Path(callback.dirpath), trainer.global_step, known):
            checkpointing.remove(path)
            rank_zero_info(
                f"removed {path}: saved after step {trainer.global_step} by a run "
                "that did not finish, unknown to the resumed state"
            )
