"""Committing a sharded checkpoint directory into place, and cleaning what a crash left.

``FSDP2Strategy.save_checkpoint`` writes ``<name>.partial`` on every rank and, after a barrier,
rank 0 calls :func:`lit_align.checkpointing.commit`; loading calls ``recover`` first. Here the
two functions run on plain directories; a real crash in the middle of a 2-node save is in
``test_resume_2node.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lit_align import checkpointing
from lit_align.checkpointing import commit, old_path, recover, staging_path


def _checkpoint(path: Path, content: str) -> Path:
    path.mkdir()
    for shard in ("__0_0.distcp", "__1_0.distcp", ".metadata", "meta.pt"):
        (path / shard).write_text(content)
    return path


def _content(path: Path) -> set[str]:
    return {p.read_text() for p in path.iterdir()}


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture(params=["exchange", "two renames"])
def swap(request, monkeypatch) -> str:
    """Both ways of replacing a checkpoint: one atomic swap, or the fallback without one."""
    if request.param == "two renames":
        monkeypatch.setattr(checkpointing, "_exchange", lambda a, b: False)
    return request.param


def test_commit_creates_and_replaces_leaving_nothing_else(tmp_path, swap):
    target = tmp_path / "last.ckpt"
    commit(_checkpoint(staging_path(target), "step 2"), target)
    assert _names(tmp_path) == ["last.ckpt"] and _content(target) == {"step 2"}
    commit(_checkpoint(staging_path(target), "step 4"), target)
    assert _names(tmp_path) == ["last.ckpt"] and _content(target) == {"step 4"}


def test_commit_replaces_a_single_file_checkpoint(tmp_path, swap):
    target = tmp_path / "last.ckpt"
    target.write_text("a single-file checkpoint")
    commit(_checkpoint(staging_path(target), "sharded"), target)
    assert _names(tmp_path) == ["last.ckpt"] and _content(target) == {"sharded"}


def test_interrupted_save_is_discarded_and_the_previous_checkpoint_kept(tmp_path):
    target = _checkpoint(tmp_path / "last.ckpt", "step 2")
    staging = staging_path(target)
    staging.mkdir()
    (staging / "__0_0.distcp").write_text("step 4")  # rank 1 and the metadata never came
    recover(target)
    assert _names(tmp_path) == ["last.ckpt"] and _content(target) == {"step 2"}


def test_crash_between_the_two_renames_restores_the_previous_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpointing, "_exchange", lambda a, b: False)
    target = _checkpoint(tmp_path / "last.ckpt", "step 2")
    renames = []

    def rename_then_crash(src, dst):
        renames.append((src, dst))
        if len(renames) == 2:
            raise RuntimeError("killed")  # after target -> .old, before .partial -> target
        os.replace(src, dst)

    monkeypatch.setattr(checkpointing.os, "rename", rename_then_crash)
    with pytest.raises(RuntimeError, match="killed"):
        commit(_checkpoint(staging_path(target), "step 4"), target)
    assert _names(tmp_path) == ["last.ckpt.old", "last.ckpt.partial"]
    monkeypatch.undo()
    recover(target)
    assert _names(tmp_path) == ["last.ckpt"] and _content(target) == {"step 2"}


def test_recover_drops_a_stale_old_copy_when_the_target_is_complete(tmp_path):
    target = _checkpoint(tmp_path / "last.ckpt", "step 4")
    _checkpoint(old_path(target), "step 2")  # crashed after the swap, before the clean-up
    recover(target)
    assert _names(tmp_path) == ["last.ckpt"] and _content(target) == {"step 4"}
