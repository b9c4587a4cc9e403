"""Run directories: one run per directory, never reused by accident.

A run writes its event files, ``config.yaml``, checkpoints, export and instability log into the
logger's directory (``<save_dir>/<name>/<version>``). :func:`claim` decides before anything is
written:

- a directory that does not exist (or is empty) is a **new** run; leaving the logger's
  ``version`` unset always gives the next free ``version_<n>``;
- ``--ckpt_path`` pointing into the directory (or ``last``) **resumes** that run there;
- a directory holding anything else is refused with :class:`RunDirectoryError`, unless
  ``--overwrite true`` is passed: its contents are then deleted first (**overwritten**), so
  ``last.ckpt`` is always the newest checkpoint of the run it sits in.

A run that fails before its first training step and checkpoint (a data error, say) removes
the directory it created (:meth:`RunDirectory.discard_if_unused`): no empty event file is left
behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lightning.fabric.utilities.rank_zero import rank_zero_only

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
NAMED_CHECKPOINTS = ("last", "hpc", "best", "registry")  # Lightning's special ckpt_path values


class RunDirectoryError(ValueError):
    """The run directory holds another run; the message names the flags that resolve it."""


@dataclass(frozen=True)
class RunDirectory:
    """The directory a run writes into, and how it came to be used.

    Attributes:
        path: the run directory.
        state: ``new``, ``resumed`` (``--ckpt_path`` of this run) or ``overwritten``.
    """

    path: Path
    state: Literal["new", "resumed", "overwritten"]

    def describe(self) -> str:
        """One line for the console: ``run directory: runs/x/version_3 (new)``."""
        return f"run directory: {self.path} ({self.state})"

    def discard_if_unused(self) -> None:
        """Remove the directory of a new or overwritten run that wrote no checkpoint."""
        checkpoints = self.path / CHECKPOINTS
        has_checkpoint = checkpoints.is_dir() and any(checkpoints.iterdir())
        if self.state != "resumed" and not has_checkpoint and rank_zero_only.rank == 0:
            shutil.rmtree(self.path, ignore_errors=True)


def claim(log_dir: str | Path, ckpt_path: str | None, overwrite: bool) -> RunDirectory:
    """Decide how a run uses ``log_dir``; clear it first when ``overwrite`` allows.

    Raises:
        RunDirectoryError: ``log_dir`` holds another run and ``overwrite`` is False.
    """
    path = Path(log_dir)
    contents = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if ckpt_path is not None and _inside(ckpt_path, path):
        return RunDirectory(path, "resumed")
    if not contents:
        return RunDirectory(path, "new")
    if not overwrite:
        shown = ", ".join(contents[:4]) + (", ..." if len(contents) > 4 else "")
        raise RunDirectoryError(
            f"run directory {path} already holds a run ({shown}); pass --overwrite true to "
            f"replace it, --ckpt_path {path / CHECKPOINTS / LAST} to resume it, or "
            "--trainer.logger.init_args.version NAME for another directory (unset: the next "
            "free version_<n>)"
        )
    if rank_zero_only.rank == 0:
        shutil.rmtree(path)
    return RunDirectory(path, "overwritten")


def resumed_version(root: str | Path, ckpt_path: str | None) -> str | None:
    """The version (directory name under ``root``) of the run that ``ckpt_path`` resumes.

    ``root`` is the logger's ``<save_dir>/<name>``. A checkpoint file
    ``<root>/<version>/checkpoints/*.ckpt`` gives ``<version>``; ``last`` gives the run under
    ``root`` with the newest ``checkpoints/last.ckpt``. None when the checkpoint belongs to no
    run under ``root`` (the run then starts a new directory from its weights).
    """
    root = Path(root)
    if ckpt_path == "last":
        runs = [p for p in root.glob(f"*/{CHECKPOINTS}/{LAST}") if p.is_file()]
        newest = max(runs, key=lambda p: p.stat().st_mtime, default=None)
        return newest.parent.parent.name if newest is not None else None
    if ckpt_path is None or ckpt_path in NAMED_CHECKPOINTS:
        return None
    ckpt = Path(ckpt_path).resolve()
    run = ckpt.parent.parent
    if ckpt.parent.name == CHECKPOINTS and run.parent == root.resolve():
        return run.name
    return None


def _inside(ckpt_path: str, path: Path) -> bool:
    if ckpt_path in NAMED_CHECKPOINTS:
        return True  # Lightning looks for it in this run's checkpoint directory
    return path.resolve() in Path(ckpt_path).resolve().parents
