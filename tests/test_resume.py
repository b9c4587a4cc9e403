"""Exact resume after SIGKILL mid-epoch, one process, single-file checkpoints.

Two runs of the same ``lit-align fit`` (see ``distributed/resume_runs.py``: 6 steps per epoch,
2 epochs, a checkpoint every 4 steps plus ``last.ckpt``) start side by side: ``full`` runs to
the end; ``killed`` stalls before its 8th step (epoch 1, batch 1) and is SIGKILLed with its
process group once it does, its newest checkpoint being step 4 (epoch 0, batch 4 of 6: mid-epoch).
Steps 5-7 are lost with it. ``resumed`` then runs ``lit-align fit --ckpt_path last`` in the same
directory, with ``--weights_only=true`` and ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` (every
``torch.load`` restricted to tensors and primitive types).

``--ckpt_path last`` (Lightning 2.6, ``_CheckpointConnector._parse_ckpt_path``): among the files
of each ``ModelCheckpoint``'s directory named ``last*.ckpt`` (``_find_last_checkpoints``), the
newest by modification time; with none, a warning and a fresh start.

Checked: the resumed run starts at the checkpoint's batch; the killed run's batches before the
checkpoint followed by the resumed run's are exactly the uninterrupted run's (same rows, same
order: none repeated, none skipped); the final weights are bit-identical. The data module saves
the loader position itself (``LoaderPosition``), since Lightning drops the loader's own saved
state when ``estimated_stepping_batches`` is read first (issue #20550). Single-file saves are
Lightning's ``_atomic_save`` (see ``lit_align/checkpointing.py``); the sharded case, including a
crash in the middle of a save, is ``distributed/test_resume_2node.py``.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed"))  # shared test helpers
from launch import clean_env, finish_all, kill, start, wait_for  # noqa: E402
from resume_runs import (  # noqa: E402
    PAIRS,
    STEPS_PER_EPOCH,
    batches,
    checkpoint_step,
    fit_command,
    recorder_env,
    stitch,
    weight_diff,
    write_config,
)

from lit_align.lightning_cli import run_lightning_cli  # noqa: E402

EVERY = 4
STALL_AT = 7  # optimizer steps done when the killed run stalls: epoch 1, batch 1
ENFORCE = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("resume")
    config = write_config(tmp / "config.yaml", EVERY, ranks=1)
    stall = ["--trainer.callbacks+=_recorders.StallAtStep", f"--trainer.callbacks.step={STALL_AT}"]
    stall.append(f"--trainer.callbacks.dirpath={tmp / 'killed'}")
    logs = {name: tmp / f"{name}.log" for name in ("full", "killed", "resumed")}
    procs = {
        logs["full"]: start(fit_command(config, tmp / "full", tmp / "full"), logs["full"], _env()),
        logs["killed"]: start(
            fit_command(config, tmp / "killed", tmp / "killed", *stall), logs["killed"], _env()
        ),
    }
    try:
        marker = tmp / "killed" / "stalled-rank0"
        wait_for(marker.is_file, {logs["killed"]: procs[logs["killed"]]}, "the run to stall")
        kill(procs[logs["killed"]])  # SIGKILL, process group and descendants
        last = tmp / "killed" / "checkpoints" / "last.ckpt"
        resumed_at = checkpoint_step(last)
        args = ["--ckpt_path=last", "--weights_only=true"]
        cmd = fit_command(config, tmp / "killed", tmp / "resumed", *args)
        procs[logs["resumed"]] = start(cmd, logs["resumed"], _env(**ENFORCE))
        exports = [tmp / "full" / "export", tmp / "killed" / "export"]
        finish_all({log: procs[log] for log in (logs["full"], logs["resumed"])}, exports)
    finally:
        for proc in procs.values():
            kill(proc)
    return {"tmp": tmp, "resumed_at": resumed_at, "last": last}


def _env(**extra: str) -> dict[str, str]:
    """A clean environment that can import ``_recorders``, plus ``extra``."""
    return recorder_env(clean_env(**extra))


def test_killed_mid_epoch_after_a_mid_epoch_checkpoint(runs):
    assert runs["resumed_at"] == EVERY and EVERY % STEPS_PER_EPOCH != 0
    killed = batches(runs["tmp"] / "killed")
    assert [b["step"] for b in killed] == list(range(STALL_AT + 1))  # 0..6 trained, 7 started


def test_resumed_data_order_is_the_uninterrupted_order(runs):
    tmp, at = runs["tmp"], runs["resumed_at"]
    full, resumed = batches(tmp / "full"), batches(tmp / "resumed")
    assert len(full) == 2 * STEPS_PER_EPOCH
    assert (resumed[0]["step"], resumed[0]["epoch"], resumed[0]["batch"]) == (at, 0, at)
    stitched = stitch(batches(tmp / "killed"), resumed, at)
    print(f"\n1 process: resumed at step {at}; {len(stitched)} batches stitched == uninterrupted")
    assert stitched == full
    for epoch in range(2):  # every row of the epoch exactly once (chosen and rejected rows)
        rows = [r for b in full if b["epoch"] == epoch for r in b["rows"]]
        assert len(rows) == len(set(rows)) == 2 * PAIRS


def test_resumed_weights_equal_the_uninterrupted_run(runs):
    diff = weight_diff(runs["tmp"] / "full" / "export", runs["tmp"] / "killed" / "export")
    print(f"\n1 process: resumed vs uninterrupted final weights max |dw| = {diff:.1e}")
    assert diff == 0.0


class _NotAllowlisted:
    """Any class outside ``torch.load``'s weights-only allowlist."""


def test_weights_only_refuses_a_checkpoint_holding_other_objects(runs, tmp_path):
    """The same resume with a tampered checkpoint fails: the enforcement is not vacuous.

    ``weights_only`` left unset (what ``lit-align fit`` passes by default) means torch's
    default, which is True since torch 2.6.
    """
    checkpoint = torch.load(runs["last"], weights_only=True)
    checkpoint["extra"] = _NotAllowlisted()
    torch.save(checkpoint, tmp_path / "tampered.ckpt")
    args = [
        "fit",
        f"--config={runs['tmp'] / 'config.yaml'}",
        f"--trainer.default_root_dir={tmp_path}",
        f"--ckpt_path={tmp_path / 'tampered.ckpt'}",
    ]
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run_lightning_cli(args)
