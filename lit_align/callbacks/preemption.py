"""PreemptionCheckpoint: SIGTERM saves a checkpoint at the next step boundary, then exits non-zero.

A cluster scheduler sends SIGTERM some time before it kills a job. Lightning notices the signal
(``trainer.received_sigterm``) and leaves the fit loop after the current batch with
``SIGTERMException``, a ``SystemExit`` whose exit code is 0 and which saves nothing: the steps
since the last checkpoint were lost and the job looked successful. This callback (added by
``AlignmentModule.configure_callbacks``) saves at the end of the batch that was running, where
``ModelCheckpoint`` saves too (so ``--ckpt_path last`` resumes exactly), and sets the exit code:

* :data:`EXIT_PREEMPTED` (143, as a process killed by SIGTERM) after the checkpoint was saved
  (at the end of the batch in flight, or, when the signal came after that check, where Lightning
  stopped between two training batches);
* :data:`EXIT_UNSAVED` (1) when the signal came where no consistent checkpoint can be taken
  (validation, setup) and nothing was saved;
* 0 on SLURM with Lightning's auto-requeue, once the checkpoint is saved where the requeued job
  resumes from (Lightning's ``hpc_ckpt_<n>.ckpt``) and ``scontrol requeue`` succeeded.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

EXIT_PREEMPTED = 143
EXIT_UNSAVED = 1


class PreemptionCheckpoint(Callback):
    """On SIGTERM, save where ``--ckpt_path last`` finds it and exit non-zero (see the module)."""

    def __init__(self) -> None:
        self.saved: str | None = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Any rank's signal stops every rank: the save is a collective.
        if self.saved is None and trainer.strategy.reduce_boolean_decision(
            trainer.received_sigterm, all=False
        ):
            self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        path = checkpoint_path(trainer)
        trainer.save_checkpoint(path)  # a collective: every rank is here
        self.saved = path
        rank_zero_info(f"SIGTERM: saved step {trainer.global_step} to {path}")

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        if self.saved is None and _between_training_batches(trainer):
            self._save(trainer)  # the signal came after this callback's last batch-end check
        if self.saved is None:
            rank_zero_warn("SIGTERM outside a training step: no checkpoint was saved")
            exception.code = EXIT_UNSAVED
        elif _auto_requeue(trainer) and _requeue(trainer):
            exception.code = 0
        else:
            exception.code = EXIT_PREEMPTED
            rank_zero_info(f"SIGTERM: resume with --ckpt_path {self.saved} (or last)")


def checkpoint_path(trainer: Trainer) -> str:
    """Where the preemption checkpoint goes: SLURM's requeue path, else ``last.ckpt``."""
    if _auto_requeue(trainer):
        return trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
        name = callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION
        return os.path.join(callback.dirpath, name)
    return os.path.join(trainer.default_root_dir, "last.ckpt")


def _between_training_batches(trainer: Trainer) -> bool:
    """Whether fit stopped with every started training batch complete (a resumable point).

    Lightning raises ``SIGTERMException`` there: after a batch (one process) or before the next
    (several, once rank 0's signal is broadcast). Not during validation or mid-batch.
    """
    if not trainer.training:  # validating, or not in the fit loop at all
        return False
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return progress.started == progress.completed


def _auto_requeue(trainer: Trainer) -> bool:
    environment = trainer._accelerator_connector.cluster_environment
    return isinstance(environment, SLURMEnvironment) and environment.auto_requeue


def _requeue(trainer: Trainer) -> bool:
    """``scontrol requeue`` this job (rank 0, as Lightning's SIGUSR1 handler); True on success."""
    if not trainer.is_global_zero:
        return True
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    result = subprocess.run(["scontrol", "requeue", job], check=False)
    if result.returncode != 0:
        rank_zero_warn(f"SIGTERM: scontrol requeue {job} failed ({result.returncode})")
    return result.returncode == 0
