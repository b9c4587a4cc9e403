"""SIGTERM saves a checkpoint, exits non-zero, and the run resumes exactly.

Real ``lit-align fit`` runs (the config of ``distributed/resume_runs.py``: 6 steps per epoch, 2
epochs, a checkpoint every 4 steps plus ``last.ckpt``): ``full`` runs to the end; ``signalled``
receives SIGTERM during its 7th step, or just after it once every batch-end hook has run (as when
the signal comes during a periodic save); its newest checkpoint is step 4. It saves
``last.ckpt`` at step 7 and exits 143. ``resumed`` then runs ``--ckpt_path last``: it starts at
step 7, not 4 (nothing was lost), trains on exactly the uninterrupted run's batches, and ends
with bit-identical weights.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed"))  # shared test helpers
from launch import clean_env, finish_all, kill, start, wait_for  # noqa: E402
from resume_runs import (  # noqa: E402
    batches,
    checkpoint_step,
    fit_command,
    recorder_env,
    stitch,
    weight_diff,
    write_config,
)

from lit_align.callbacks.preemption import (  # noqa: E402
    EXIT_PREEMPTED,
    EXIT_UNSAVED,
    PreemptionCheckpoint,
)

EVERY = 4
PAUSE_AT = 6  # optimizer steps done when SIGTERM arrives: the 7th (no periodic save) in flight


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> dict:
    """The uninterrupted run, started here and finished by the first :func:`runs` (in parallel
    with its signalled run): batch records and export in ``dir``."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    config = write_config(tmp / "config.yaml", EVERY, ranks=1)
    log, env = tmp / "full.log", recorder_env(clean_env())
    proc = start(fit_command(config, tmp / "full", tmp / "full"), log, env)
    yield {"dir": tmp / "full", "launch": {log: proc}}
    kill(proc)


@pytest.fixture(scope="module", params=["PauseUntilSigterm", "PauseAfterBatch"])
def runs(request, full, tmp_path_factory) -> dict:
    """SIGTERM in the middle of step 7 (``PauseUntilSigterm``) or after it, once every
    callback's batch-end hook has run (``PauseAfterBatch``), then ``--ckpt_path last``."""
    tmp = tmp_path_factory.mktemp(request.param)
    config = write_config(tmp / "config.yaml", EVERY, ranks=1)
    pause, step = f"_preemption.{request.param}", PAUSE_AT + (request.param == "PauseAfterBatch")
    args = [f"--trainer.callbacks+={pause}", f"--trainer.callbacks.step={step}"]
    args.append(f"--trainer.callbacks.dirpath={tmp / 'signalled'}")
    logs = {name: tmp / f"{name}.log" for name in ("signalled", "resumed")}
    env = recorder_env(clean_env())
    cmd = fit_command(config, tmp / "signalled", tmp / "signalled", *args)
    procs = {"signalled": start(cmd, logs["signalled"], env)}
    try:
        marker = tmp / "signalled" / "paused"
        wait_for(marker.is_file, {logs["signalled"]: procs["signalled"]}, "the run to pause")
        os.kill(procs["signalled"].pid, signal.SIGTERM)
        code = procs["signalled"].wait(timeout=120)
        saved_at = checkpoint_step(tmp / "signalled" / "checkpoints" / "last.ckpt")
        cmd = fit_command(config, tmp / "signalled", tmp / "resumed", "--ckpt_path=last")
        procs["resumed"] = start(cmd, logs["resumed"], env)
        finish_all({logs["resumed"]: procs["resumed"]}, [tmp / "signalled" / "export"])
        finish_all(full["launch"], [full["dir"] / "export"])  # at once from the second run on
    finally:
        for proc in procs.values():
            kill(proc)
    return {
        "tmp": tmp,
        "full": full["dir"],
        "code": code,
        "saved_at": saved_at,
        "log": logs["signalled"],
    }


def test_sigterm_saves_the_step_and_exits_143(runs):
    assert runs["code"] == EXIT_PREEMPTED
    assert runs["saved_at"] == PAUSE_AT + 1  # newer than the step-4 checkpoint: nothing lost
    assert f"SIGTERM: saved step {PAUSE_AT + 1} to" in runs["log"].read_text()


def test_resumed_batches_are_the_uninterrupted_batches(runs):
    tmp, at = runs["tmp"], runs["saved_at"]
    resumed = batches(tmp / "resumed")
    assert resumed[0]["step"] == at
    assert stitch(batches(tmp / "signalled"), resumed, at) == batches(runs["full"])


def test_resumed_weights_equal_the_uninterrupted_run(runs):
    diff = weight_diff(runs["full"] / "export", runs["tmp"] / "signalled" / "export")
    print(f"\nSIGTERM at step {runs['saved_at']}, resumed: max |dw| vs uninterrupted = {diff:.1e}")
    assert diff == 0.0


def _slurm_trainer() -> SimpleNamespace:
    environment = SLURMEnvironment(auto_requeue=True)
    return SimpleNamespace(
        _accelerator_connector=SimpleNamespace(cluster_environment=environment),
        is_global_zero=True,
        training=False,  # the signal came outside the fit loop
    )


@pytest.mark.parametrize(("scontrol_exit", "expected"), [(0, 0), (1, EXIT_PREEMPTED)])
def test_on_slurm_a_saved_checkpoint_is_requeued(tmp_path, monkeypatch, scontrol_exit, expected):
    """With auto-requeue, a completed save and a successful ``scontrol requeue`` exit 0."""
    calls = tmp_path / "calls"
    scontrol = tmp_path / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit {scontrol_exit}\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    callback, exception = PreemptionCheckpoint(), SIGTERMException()
    callback.saved = "hpc_ckpt_1.ckpt"
    callback.on_exception(_slurm_trainer(), None, exception)
    assert exception.code == expected and calls.read_text() == "requeue 4242\n"


def test_sigterm_outside_a_training_step_exits_1_without_requeue(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol: it must not be called
    exception = SIGTERMException()
    PreemptionCheckpoint().on_exception(_slurm_trainer(), None, exception)
    assert exception.code == EXIT_UNSAVED
