"""Crash-safe sharded checkpoints: written beside the target, then renamed into place.

A distributed checkpoint is a directory every rank writes into (one ``__{rank}_0.distcp`` shard
file each, then ``.metadata`` from the coordinator, then Lightning's ``meta.pt`` from rank 0).
``ModelParallelStrategy`` writes it in place, so a crash while ``last.ckpt`` is being overwritten
(every ``every_n_train_steps``) would leave new shards beside old metadata: no good checkpoint at
all. :class:`~lit_align.distributed.FSDP2Strategy` instead writes into ``<name>.partial``, waits
until every rank has finished, and rank 0 swaps it into place with :func:`commit`, so the target
is always either the previous complete checkpoint or the new complete one.

For comparison, Lightning's single-file checkpoints (``save_distributed_checkpoint=False``, and
every non-sharded strategy) go through ``lightning.fabric.utilities.cloud_io._atomic_save``: the
whole checkpoint is serialised into memory first, then written inside an fsspec transaction. For
a local path fsspec writes a temporary file from ``tempfile.mkstemp()`` (the system temporary
directory) and ``shutil.move``-s it onto the target on commit: atomic (a rename) when that
directory is on the same filesystem as the checkpoint, but a plain copy onto the target, which a
crash can leave truncated, when it is not (e.g. ``/tmp`` on tmpfs). Neither path calls ``fsync``.

Leftovers are harmless: Lightning's ``ckpt_path="last"`` only considers ``last*.ckpt`` names
(``ModelCheckpoint._find_last_checkpoints``), which ``.partial`` and ``.old`` are not, and
:func:`recover` cleans a checkpoint's leftovers before it is loaded. All paths must be on a
filesystem every rank shares (DCP needs that anyway).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

STAGING_SUFFIX = ".partial"
"""A save in progress (or interrupted): never loaded, removed by the next save or load."""
OLD_SUFFIX = ".old"
"""The replaced checkpoint during a non-atomic swap; restored by :func:`recover` if needed."""

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_path(target: Path) -> Path:
    """Where the checkpoint for ``target`` is written before :func:`commit`."""
    return target.with_name(target.name + STAGING_SUFFIX)


def old_path(target: Path) -> Path:
    return target.with_name(target.name + OLD_SUFFIX)


def remove(path: Path) -> None:
    """Delete a checkpoint file or directory if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def commit(staging: Path, target: Path) -> None:
    """Put the complete checkpoint ``staging`` at ``target``, replacing any previous one.

    Where the filesystem can swap two paths in one step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``: ext4, xfs, btrfs, tmpfs) ``target`` always names a complete checkpoint.
    Elsewhere (NFS, Lustre, macOS) the previous checkpoint is renamed to ``<name>.old`` first, and
    a crash between the two renames leaves only ``<name>.old``, which :func:`recover` restores.
    Call on one rank, after every rank has finished writing ``staging``.
    """
    old = old_path(target)
    remove(old)
    if not (target.exists() or target.is_symlink()):  # a link: ModelCheckpoint(save_last="link")
        os.rename(staging, target)
    elif _exchange(staging, target):
        remove(staging)  # now the previous checkpoint
    else:
        os.rename(target, old)
        os.rename(staging, target)
        remove(old)
    _sync_directory(target.parent)


def recover(target: Path) -> None:
    """Clean what an interrupted save of ``target`` left: restore ``.old``, drop ``.partial``.

    A ``.partial`` directory is never trusted (its ranks may not all have finished). A ``.old``
    one is the previous complete checkpoint; it comes back only if ``target`` is missing.
    """
    old = old_path(target)
    if old.exists() and not target.exists():
        os.rename(old, target)
    remove(old)
    remove(staging_path(target))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the OS or filesystem cannot."""
    libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # not glibc >= 2.28 (macOS, musl, Windows)
        return False
    paths = os.fsencode(a), os.fsencode(b)
    if renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _sync_directory(path: Path) -> None:
    """Make the renames in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_loadable(path: Path, sharded_ok: bool) -> None:
    """Refuse, with one line naming ``--ckpt_path``, what would fail obscurely on load.

    Args:
        path: the checkpoint file or sharded directory.
        sharded_ok: whether the strategy loads sharded directories (``FSDP2Strategy``).
    """
    if not path.exists():
        raise FileNotFoundError(f"--ckpt_path {path}: no checkpoint file or directory there")
    if path.is_dir() and not sharded_ok:
        raise ValueError(
            f"--ckpt_path {path} is a sharded checkpoint directory: resume it with "
            "--trainer.strategy=fsdp2 (lit_align.distributed.FSDP2Strategy), or turn it into a "
            "model directory with lit-align export"
        )
    if path.is_dir() and not (path / ".metadata").is_file():
        raise ValueError(f"--ckpt_path {path}: not a complete sharded checkpoint (no .metadata)")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"--ckpt_path {path} is an empty file (0 bytes): an interrupted copy?")


def clean_leftovers(dirpath: Path) -> list[Path]:
    """Restore or remove what interrupted saves left in a checkpoint directory; what was removed.

    Every ``<name>.partial`` (a save never committed) is dropped, every ``<name>.old`` restored
    if ``<name>`` is missing (:func:`recover`). Call on one rank, before a checkpoint is chosen.
    """
    if not dirpath.is_dir():
        return []
    leftovers = [*dirpath.glob(f"*{STAGING_SUFFIX}"), *dirpath.glob(f"*{OLD_SUFFIX}")]
    for leftover in leftovers:
        recover(leftover.with_name(leftover.name.rsplit(".", 1)[0]))
    return [p for p in leftovers if not p.exists()]


def orphans(dirpath: Path, resumed_step: int, known: set[str]) -> list[Path]:
    """Checkpoints in ``dirpath`` from after ``resumed_step`` that the resumed state never saw.

    A run killed after saving a checkpoint (a new top-k one, say) but before the checkpoint it
    resumes from was written leaves files no ``ModelCheckpoint`` state knows: they would never
    be rotated out, and they hold a timeline the resumed run abandons. Recognised by Lightning's
    ``step=<n>`` in the name; ``last*`` files and the ``known`` paths are kept.
    """
    found = []
    for path in dirpath.glob("*.ckpt"):
        match = re.search(r"(?:^|-)step=(\d+)", path.stem)
        late = match is not None and int(match.group(1)) > resumed_step
        if late and not path.name.startswith("last") and str(path) not in known:
            found.append(path)
    return sorted(found)


LAST_OR_NEW = "last_or_new"
"""``--ckpt_path last_or_new``: resume from ``last`` when there is one, else start a new run."""


def resolve_ckpt_path(trainer: Any, ckpt_path: str | None) -> str | None:
    """``--ckpt_path`` for ``fit``: ``last`` must find a checkpoint; ``last_or_new`` need not.

    Lightning treats ``last`` with nothing to resume as a warning and trains from scratch, which
    a requeued or mistyped job should not do silently. Leftovers of interrupted saves are cleaned
    first (rank 0), so a checkpoint waiting in ``<name>.old`` is found.
    """
    if ckpt_path not in ("last", LAST_OR_NEW):
        return ckpt_path
    callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    # Lightning's own choice of directory (dirpath, else from the logger or the root dir); the
    # directory _find_last_checkpoints, and so Lightning's "last", searches.
    dirs = [Path(cb._ModelCheckpoint__resolve_ckpt_dir(trainer)) for cb in callbacks]
    if trainer.is_global_zero:
        for dirpath in dirs:
            clean_leftovers(dirpath)
    if any(cb._find_last_checkpoints(trainer) for cb in callbacks):
        return "last"
    if ckpt_path == LAST_OR_NEW:
        return None
    where = ", ".join(map(str, dirs)) or "no checkpoint directory (no ModelCheckpoint)"
    raise FileNotFoundError(
        f"--ckpt_path last: no last*.ckpt to resume in {where}; pass "
        f"--ckpt_path {LAST_OR_NEW} to start a new run when there is none"
    )


class CheckpointArguments:
    """LightningCLI mixin: ``--ckpt_path`` checked before Lightning reads it, ``last`` resolved.

    LightningCLI reads a checkpoint file's hyper-parameters while parsing (an empty file would
    end in a bare ``EOFError``); ``fit`` then gets :func:`resolve_ckpt_path`'s answer, checked
    by :func:`check_loadable` for the trainer's strategy.
    """

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and Path(path).is_file():
            check_loadable(Path(path), sharded_ok=True)

    def before_fit(self) -> None:
        from lit_align.distributed import FSDP2Strategy  # which imports this module

        config = self.config_init[self.subcommand]
        path = resolve_ckpt_path(self.trainer, config.get("ckpt_path"))
        if path not in (None, "last", "best", "hpc", "registry"):
            sharded_ok = isinstance(self.trainer.strategy, FSDP2Strategy)
            check_loadable(Path(path), sharded_ok)
        config["ckpt_path"] = path
