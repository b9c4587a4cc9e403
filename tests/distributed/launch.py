"""Bounded launches of training processes for tests: start, poll, kill the whole tree, finish.

Every process is started in a new session (its own process group) with a clean environment (no
launcher variables from a surrounding SLURM job or torchrun) and one OpenMP thread. ``kill``
SIGKILLs the process, its group and every descendant (torchrun starts its workers in new
sessions), so nothing outlives a test; ``finish`` and ``wait_for`` fail the test within a bounded
time instead of hanging.

Artifacts are checked, not only exit codes: an exit of 134 ("terminate called without an active
exception", a rare gloo teardown crash after the work is done) is tolerated when the expected
outputs are complete; the strategy destroys the process group at exit to prevent it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

TIMEOUT_S = 120
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
LIT_ALIGN = [sys.executable, "-m", "lit_align.cli"]
# Variables of launchers (SLURM, torchrun, Lightning) that must not leak into a test launch.
_LAUNCHER_VARS = (
    "SLURM_",
    "TORCHELASTIC_",
    "RANK",
    "LOCAL_",
    "WORLD_",
    "GROUP_",
    "MASTER_",
    "NODE_",
)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without launcher variables, with one OpenMP thread, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCHER_VARS)}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def node_env(node_rank: int, port: int, **extra: str) -> dict[str, str]:
    """Variables of one simulated node under Lightning's launcher (loopback rendezvous)."""
    rendezvous = {"NODE_RANK": str(node_rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return clean_env(**rendezvous, **extra)


def free_port() -> int:
    """A TCP port free on the loopback interface now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in a new session, stdout and stderr to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or clean_env(),
            start_new_session=True,
        )


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, … of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (comm) state ppid ..."; comm may hold spaces and parentheses
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    found, frontier = [], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL a launch with its group and descendants, then reap it."""
    if proc.poll() is not None:
        return
    for pid in _descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text()[-chars:] if log.is_file() else f"(no log at {log})"


def finish(
    proc: subprocess.Popen, log: Path, outputs: Sequence[Path], timeout: float = TIMEOUT_S
) -> None:
    """Wait (bounded); kill everything launched on timeout; require the expected outputs."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        pytest.fail(f"no exit after {timeout} s (hang?); log tail:\n{tail(log)}")
    teardown_crash = rc == 134 and "terminate called without an active" in log.read_text()
    if (rc != 0 and not teardown_crash) or not all(p.exists() for p in outputs):
        pytest.fail(f"exit {rc}, outputs {list(outputs)}; log tail:\n{tail(log)}")


def finish_all(launches: dict[Path, subprocess.Popen], outputs: Sequence[Path]) -> None:
    """``finish`` several processes (keyed by log) under one deadline; kill them all on failure."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for log, proc in launches.items():
            finish(proc, log, [], timeout=max(1.0, deadline - time.monotonic()))
        missing = [p for p in outputs if not p.exists()]
        if missing:
            logs = "\n".join(f"--- {log}\n{tail(log, 1500)}" for log in launches)
            pytest.fail(f"missing outputs {missing}; logs:\n{logs}")
    finally:
        for proc in launches.values():
            kill(proc)


def wait_for(
    condition: Callable[[], bool], launches: dict[Path, subprocess.Popen], what: str
) -> None:
    """Poll ``condition`` until true; fail (killing every launch) on timeout or an early exit."""
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        exited = {log: p.poll() for log, p in launches.items() if p.poll() is not None}
        if exited or time.monotonic() > deadline:
            for proc in launches.values():
                kill(proc)
            logs = "\n".join(f"--- {log}\n{tail(log, 1500)}" for log in launches)
            reason = f"exited early {exited}" if exited else f"not within {TIMEOUT_S} s"
            pytest.fail(f"waiting for {what}: {reason}; logs:\n{logs}")
        time.sleep(0.1)
