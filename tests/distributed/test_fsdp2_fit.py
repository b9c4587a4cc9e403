"""FSDP2 on 2 CPU processes (gloo): equality with unsharded training, sharding, checkpoints.

One DPO fit of a tiny model on the embedded task (64 pairs, constant LR, 2 epochs of 8 micro-
batches, ``accumulate_grad_batches=2`` so 4 optimizer steps per epoch, gradient clipping at
0.25, active on most steps), run three ways through ``_fit_worker.py``:

* ``reference``: one process, unsharded (DDP with world size 1, used only so that Lightning
  draws the same ``DistributedSampler`` permutation), batch 8;
* ``sharded``: torchrun, 2 ranks x batch 4 = the same global batches, FSDP2 in float32, with
  activation checkpointing, a sharded checkpoint after each epoch;
* ``resumed``: one process, FSDP2, batch 8, from the sharded run's epoch-1 checkpoint (DCP
  reshards 2 -> 1), second epoch only.

Each run exports the final policy with ``HFExport`` (gathered from the shards where sharded).

Per micro-batch the DPO loss is a mean over pairs, so the mean of the two ranks' losses is the
global-batch loss; ``grad_norm`` is the module's global (collective) norm. Float32 sums in a
different order differ by ~1e-7; TOL allows 1e-5.

Every launch is bounded and killed with all its descendants (``launch.py``); artifacts are
checked, not only exit codes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from launch import TIMEOUT_S, TORCHRUN, finish, kill, start
from safetensors.torch import load_file
from tiny import TINY
from torch.distributed.checkpoint import FileSystemReader

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).resolve().parent / "_fit_worker.py"
TOL = 1e-5
WEIGHT_TOL = 1e-4  # 8 AdamW steps: normalised updates amplify tiny gradient differences
FSDP2 = ["--trainer.strategy=FSDP2Strategy", "--trainer.strategy.param_dtype=float32"]
CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "limit_val_batches": 0,
        "accumulate_grad_batches": 2,
        "gradient_clip_val": 0.25,
    },
    "model": {
        "policy": {
            "tokenizer": "builtin:sort",
            "config": dict(TINY),
        },
        "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}},
        "schedule": {"warmup_ratio": 0.0, "decay": "constant"},
    },
    "data": {"dataset": "builtin:sort", "builtin_rows": 64, "max_length": 64, "batch_size": 8},
}
EXPORT = ["--trainer.callbacks+=lit_align.callbacks.HFExport"]  # to <run>/export at fit end
CHECKPOINTS = [
    "--trainer.enable_checkpointing=true",
    "--trainer.callbacks+=ModelCheckpoint",
    "--trainer.callbacks.save_top_k=-1",
]


def _fit(tmp: Path, name: str, launcher: list[str], *args: str) -> subprocess.Popen:
    cmd = [*launcher, str(WORKER), f"--out={tmp / name}", f"--config={tmp / 'config.yaml'}"]
    return start([*cmd, f"--trainer.default_root_dir={tmp / name}", *args], tmp / f"{name}.log")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("fsdp2")
    (tmp / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    sharded = [*FSDP2, "--trainer.devices=2", "--data.batch_size=4", *EXPORT, *CHECKPOINTS]
    sharded.append("--model.activation_checkpointing=true")
    procs = {  # the two first runs share the CPUs
        "reference": _fit(tmp, "reference", [sys.executable], "--trainer.strategy=ddp", *EXPORT),
        "sharded": _fit(tmp, "sharded", TORCHRUN, *sharded),
    }
    try:
        finish(procs["reference"], tmp / "reference.log", [tmp / "reference" / "rank0.json"])
        ranks = [tmp / "sharded" / f"rank{r}.json" for r in (0, 1)]
        finish(procs["sharded"], tmp / "sharded.log", ranks)
        ckpt = tmp / "sharded" / "checkpoints" / "epoch=0-step=4.ckpt"
        resumed = [*FSDP2, *EXPORT, f"--ckpt_path={ckpt}"]
        procs["resumed"] = _fit(tmp, "resumed", [sys.executable], *resumed)
        finish(procs["resumed"], tmp / "resumed.log", [tmp / "resumed" / "rank0.json"])
    finally:
        for proc in procs.values():
            kill(proc)
    return {
        "reference": _read(tmp / "reference" / "rank0.json"),
        "sharded": [_read(p) for p in ranks],
        "resumed": _read(tmp / "resumed" / "rank0.json"),
        "checkpoint": ckpt,
        "exports": {name: tmp / name / "export" / "model.safetensors" for name in procs},
    }


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _max_diff(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) > 0
    return max(abs(x - y) for x, y in zip(a, b))


def test_two_ranks_match_one_process_on_the_same_global_batches(runs):
    ref, (r0, r1) = runs["reference"], runs["sharded"]
    assert r0["world_size"] == 2 and len(ref["losses"]) == 16 and len(ref["grad_norms"]) == 8
    global_losses = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"])]
    d_loss = _max_diff(global_losses, ref["losses"])
    d_norm = _max_diff(r0["grad_norms"], ref["grad_norms"])
    print(f"\n2 ranks vs 1: max |dloss| {d_loss:.2e}, max |dgrad_norm| {d_norm:.2e}")
    assert d_loss < TOL and d_norm < TOL
    assert r0["grad_norms"] == r1["grad_norms"]  # a global norm: identical on every rank
    assert sum(n > 0.25 for n in ref["grad_norms"]) >= 4  # clipping was really exercised
    assert ref["losses"][0] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference


def test_gradients_reduced_once_per_optimizer_step(runs):
    """With accumulation, the first micro-batch of each step issues no reduce-scatter."""
    groups = CONFIG["model"]["policy"]["config"]["num_hidden_layers"] + 1  # layers + root
    assert runs["sharded"][0]["reduce_scatters"] == [0, groups] * 8


def test_parameters_are_sharded_over_both_ranks(runs):
    r0, r1 = runs["sharded"]
    assert r0["activation_checkpointing"]  # applied before sharding, still on
    for scorer, trainable in (("policy", True), ("reference", False)):
        params = r0[scorer]
        assert params and set(params) == set(r1[scorer])
        for name, p in params.items():
            assert p["dtensor"] and p["placements"] == ["S(0)"], (scorer, name, p)
            assert p["requires_grad"] is trainable, (scorer, name)
            rows = p["local_shape"][0] + r1[scorer][name]["local_shape"][0]
            assert rows == p["shape"][0] and p["local_shape"][0] < p["shape"][0], (name, p)


def test_checkpoint_holds_no_reference_and_resumes_on_one_rank(runs):
    keys = list(FileSystemReader(str(runs["checkpoint"])).read_metadata().state_dict_metadata)
    assert any(k.startswith("state_dict.policy.model.") for k in keys)
    assert any(k.startswith("optimizer_0.state.policy.") for k in keys)
    assert not [k for k in keys if "reference" in k]
    ref, resumed = runs["reference"], runs["resumed"]
    assert resumed["world_size"] == 1
    d_loss = _max_diff(resumed["losses"], ref["losses"][8:])  # the second epoch
    d_norm = _max_diff(resumed["grad_norms"], ref["grad_norms"][4:])
    print(f"\nresumed 2 -> 1 vs 1 rank: max |dloss| {d_loss:.2e}, |dgrad_norm| {d_norm:.2e}")
    assert d_loss < TOL and d_norm < TOL


def test_final_weights_match_and_export_from_shards(runs):
    """HF exports after fit (the sharded one gathered from both ranks) hold the same weights."""
    exports = {name: load_file(path) for name, path in runs["exports"].items()}
    ref = exports.pop("reference")
    for name, weights in exports.items():
        assert weights.keys() == ref.keys()
        diff = max((weights[k] - ref[k]).abs().max().item() for k in ref)
        print(f"\n{name} vs reference: final weights max |dw| {diff:.2e}")
        assert diff < WEIGHT_TOL, name


def test_launcher_mismatch_fails_fast_naming_the_flags(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    args = ["--trainer.strategy=fsdp2", "--trainer.max_steps=1"]  # devices=1, 2 processes
    proc = _fit(tmp_path, "mismatch", TORCHRUN, *args)
    log = tmp_path / "mismatch.log"
    try:
        rc = proc.wait(timeout=TIMEOUT_S)
    finally:
        kill(proc)
    text = log.read_text()
    assert rc != 0
    assert "torchrun started 2 processes (2 per node)" in text, text[-3000:]
    assert "--trainer.devices=2 --trainer.num_nodes=1" in text
