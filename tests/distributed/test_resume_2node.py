"""Two simulated nodes: SIGKILL in the middle of a sharded save, exact resume, 2 -> 1, HF export.

Each node is one process of the real ``lit-align fit`` (``resume_runs.py``: 6 steps per epoch, 2
epochs, a checkpoint every 2 steps plus ``last.ckpt``) with ``FSDP2Strategy`` (float32), 4 pairs
per rank, ``--trainer.num_nodes=2 --trainer.devices=1`` and ``NODE_RANK`` 0 or 1 under
Lightning's own launcher, rendezvous on ``127.0.0.1``:

* ``full`` runs to the end;
* ``killed`` blocks (``_recorders.StallInSave``) inside its 5th save of ``last.ckpt`` (step 10,
  epoch 1 batch 4 of 6), each rank right after writing its shard file and before ``.metadata``;
  both process groups are then SIGKILLed. The previous ``last.ckpt`` is step 8: mid-epoch;
* ``resumed`` runs ``--ckpt_path last`` on two nodes again (``--weights_only=true`` and
  ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``: every ``torch.load``, DCP's included, weights-only);
* ``one_rank`` resumes ``full``'s end-of-epoch-0 checkpoint (2 shards) on one process with 8
  pairs per batch (DCP reshards 2 -> 1). Mid-epoch positions need the same world size: the
  sampler refuses them otherwise (``tests/data/test_sampler.py``).

Launches are bounded and killed with their descendants (``launch.py``).
"""

from __future__ import annotations

import sys

import pytest
import torch
from launch import finish_all, free_port, kill, node_env, start, wait_for
from resume_runs import (
    STEPS_PER_EPOCH,
    batches,
    checkpoint_step,
    fit_command,
    recorder_env,
    stitch,
    weight_diff,
    write_config,
)
from transformers import AutoModelForCausalLM

from lit_align.export import main as export_main

pytestmark = pytest.mark.distributed

EVERY = 2
STALL_IN_LAST_SAVE = 5  # the save at step 10
FSDP2 = {
    "class_path": "lit_align.distributed.FSDP2Strategy",
    "init_args": {"param_dtype": "float32"},
}
ENFORCE = {"TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
WEIGHT_TOL = 1e-5  # 2 ranks vs 1: float32 sums in another order (measured: see the test output)


def _nodes(tmp, name: str, root: str, config, *args: str, **env: str) -> dict:
    """Start the two node processes of run ``name`` in ``tmp / root``; {log: process}."""
    port, launches = free_port(), {}
    for node in (0, 1):
        log = tmp / f"{name}-node{node}.log"
        cmd = fit_command(config, tmp / root, tmp / f"{name}-batches", *args)
        launches[log] = start(cmd, log, recorder_env(node_env(node, port, **env)))
    return launches


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("resume2node")
    trainer = {"num_nodes": 2, "devices": 1, "strategy": FSDP2}
    config = write_config(tmp / "config.yaml", EVERY, ranks=2, trainer=trainer)
    stall = [
        "--trainer.callbacks+=_recorders.StallInSave",
        "--trainer.callbacks.name=last.ckpt",
        f"--trainer.callbacks.occurrence={STALL_IN_LAST_SAVE}",
        f"--trainer.callbacks.dirpath={tmp / 'killed'}",
    ]
    full = _nodes(tmp, "full", "full", config)
    killed = _nodes(tmp, "killed", "killed", config, *stall)
    launches = dict(full)
    checkpoints = tmp / "killed" / "checkpoints"
    try:
        markers = [tmp / "killed" / f"stalled-rank{r}" for r in (0, 1)]
        wait_for(lambda: all(m.is_file() for m in markers), killed, "both ranks to stall")
        at_kill = {
            "staging": sorted(p.name for p in (checkpoints / "last.ckpt.partial").iterdir()),
            "last": sorted(p.name for p in (checkpoints / "last.ckpt").iterdir()),
        }
        for proc in killed.values():
            kill(proc)
        resumed_at = checkpoint_step(checkpoints / "last.ckpt")
        resume = ["--ckpt_path=last", "--weights_only=true"]
        launches.update(_nodes(tmp, "resumed", "killed", config, *resume, **ENFORCE))
        boundary = tmp / "full" / "checkpoints" / f"epoch=0-step={STEPS_PER_EPOCH}.ckpt"
        wait_for(boundary.is_dir, full, "the end-of-epoch checkpoint")
        one = write_config(tmp / "one.yaml", EVERY, ranks=1, trainer={"strategy": FSDP2})
        cmd = fit_command(one, tmp / "one_rank", tmp / "one_rank", f"--ckpt_path={boundary}")
        launches[tmp / "one_rank.log"] = start(cmd, tmp / "one_rank.log", recorder_env())
        exports = [tmp / name / "export" / "model.safetensors" for name in ("full", "killed")]
        finish_all(launches, [*exports, tmp / "one_rank" / "export" / "model.safetensors"])
    finally:
        for proc in [*launches.values(), *killed.values()]:
            kill(proc)
    return {"tmp": tmp, "at_kill": at_kill, "resumed_at": resumed_at}


def _ranks(dirpath) -> list[list[dict]]:
    return [batches(dirpath, rank) for rank in (0, 1)]


def test_a_crash_inside_a_save_leaves_the_previous_checkpoint(runs):
    at_kill = runs["at_kill"]
    assert at_kill["staging"] == ["__0_0.distcp", "__1_0.distcp"]  # shards, no .metadata yet
    assert {".metadata", "meta.pt", "__0_0.distcp", "__1_0.distcp"} <= set(at_kill["last"])
    assert runs["resumed_at"] == 4 * EVERY and runs["resumed_at"] % STEPS_PER_EPOCH != 0
    names = [p.name for p in (runs["tmp"] / "killed" / "checkpoints").iterdir()]
    assert not [n for n in names if n.endswith((".partial", ".old"))], names


def test_two_nodes_resume_in_the_uninterrupted_order(runs):
    tmp, at = runs["tmp"], runs["resumed_at"]
    full, killed, resumed = (
        _ranks(tmp / "full-batches"),
        _ranks(tmp / "killed-batches"),
        _ranks(tmp / "resumed-batches"),
    )
    for rank in (0, 1):
        assert len(full[rank]) == 2 * STEPS_PER_EPOCH
        assert [b["step"] for b in killed[rank]] == list(range(STALL_IN_LAST_SAVE * EVERY))
        assert (resumed[rank][0]["step"], resumed[rank][0]["batch"]) == (at, at - STEPS_PER_EPOCH)
        assert stitch(killed[rank], resumed[rank], at) == full[rank], rank
    for b0, b1 in zip(*full):  # the two ranks' halves of each global batch are disjoint
        assert b0["step"] == b1["step"] and not set(b0["rows"]) & set(b1["rows"])
    print(f"\n2 nodes: resumed at step {at}; both ranks' batches == uninterrupted")


def test_two_nodes_resume_to_the_uninterrupted_weights(runs):
    diff = weight_diff(runs["tmp"] / "full" / "export", runs["tmp"] / "killed" / "export")
    print(f"\n2 nodes: resumed vs uninterrupted final weights max |dw| = {diff:.1e}")
    assert diff == 0.0


def test_two_rank_checkpoint_resumes_on_one_rank(runs):
    tmp = runs["tmp"]
    full, one = _ranks(tmp / "full-batches"), batches(tmp / "one_rank")
    later = [(b0, b1) for b0, b1 in zip(*full) if b0["step"] >= STEPS_PER_EPOCH]
    assert [b["step"] for b in one] == [b0["step"] for b0, _ in later]
    for b, (b0, b1) in zip(one, later):  # the same global batches, now on one rank
        assert sorted(b["rows"]) == sorted(b0["rows"] + b1["rows"]), b["step"]
    diff = weight_diff(tmp / "full" / "export", tmp / "one_rank" / "export")
    print(f"\n2 -> 1 rank resume vs uninterrupted 2 ranks: final weights max |dw| = {diff:.1e}")
    assert diff < WEIGHT_TOL


def test_export_from_the_sharded_checkpoint_equals_the_live_export(runs, tmp_path, monkeypatch):
    """``lit-align export`` of the final 2-shard ``last.ckpt``, in this single process."""
    monkeypatch.setattr(sys, "argv", ["lit-align"])  # the export parses its own arguments
    full = runs["tmp"] / "full"
    args = ["--config", str(full / "config.yaml"), "--output", str(tmp_path / "hf")]
    export_main([*args, "--ckpt_path", str(full / "checkpoints" / "last.ckpt")])
    assert weight_diff(tmp_path / "hf", full / "export") == 0.0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert model.config.num_hidden_layers == 2 and not model.training
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
