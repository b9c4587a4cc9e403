"""Nothing runs from a checkpoint: hostile sharded checkpoints are refused on every loading path.

Each hostile file carries a harmless payload, ``os.mkdir(marker)``: the marker directory exists
afterwards exactly when the payload ran. The same file loaded with the documented opt-out runs
it, so the tests would fail if the restriction did nothing. Genuine sharded checkpoints resume
through the same restricted reader in ``distributed/test_fsdp2_fit.py`` and
``distributed/test_resume_2node.py``.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml
from tiny import TINY

from lit_align.export import main as export_main
from lit_align.safe_unpickle import UnsafeCheckpointError, load_dcp

sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed"))  # shared test helpers
from launch import LIT_ALIGN, clean_env  # noqa: E402


class Payload:
    """Unpickling this creates the directory ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _plant_in_metadata(ckpt: Path, marker: Path) -> None:
    """Rewrite ``ckpt/.metadata``: the real metadata with the payload in ``planner_data``."""
    with open(ckpt / ".metadata", "rb") as f:
        metadata = pickle.load(f)
    metadata.planner_data = Payload(marker)
    with open(ckpt / ".metadata", "wb") as f:
        pickle.dump(metadata, f)


@pytest.fixture
def small_checkpoint(tmp_path) -> Path:
    path = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(3), "step": 7}, checkpoint_id=path, no_dist=True)
    return path


def test_hostile_metadata_is_refused_and_nothing_runs(small_checkpoint, tmp_path):
    marker = tmp_path / "ran"
    _plant_in_metadata(small_checkpoint, marker)
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load posix\.mkdir.*trust_che"):
        load_dcp({"w": torch.zeros(3)}, small_checkpoint)
    assert not marker.exists()
    load_dcp({"w": torch.zeros(3)}, small_checkpoint, trusted=True)  # the documented opt-out
    assert marker.is_dir()  # the payload is real: the restriction above is what stopped it


def test_hostile_value_in_a_shard_is_refused(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "ckpt"
    dcp.save({"w": torch.ones(3), "extra": Payload(marker)}, checkpoint_id=path, no_dist=True)
    with pytest.raises(UnsafeCheckpointError, match="'extra' refused by torch.load"):
        load_dcp({"w": torch.zeros(3), "extra": None}, path)
    assert not marker.exists()


def test_a_genuine_checkpoint_loads_through_the_restricted_reader(small_checkpoint):
    state = {"w": torch.zeros(3), "step": 0}
    load_dcp(state, small_checkpoint)
    assert torch.equal(state["w"], torch.ones(3)) and state["step"] == 7


def _config(tmp_path: Path) -> Path:
    """One process under FSDP2Strategy (gloo), 2 steps, a sharded ``last.ckpt`` saved."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": 2,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "strategy": {
                "class_path": "lit_align.distributed.FSDP2Strategy",
                "init_args": {"param_dtype": "float32"},
            },
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(tmp_path / "ckpts"), "save_last": True},
                }
            ],
        },
        "model": {"policy": {"tokenizer": "builtin:sort", "config": TINY}},
        "data": {"dataset": "builtin:sort", "builtin_rows": 16, "max_length": 64, "batch_size": 4},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    env = clean_env()
    return subprocess.run(
        [*LIT_ALIGN, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory) -> dict:
    """A real sharded checkpoint, written by ``lit-align fit`` under FSDP2Strategy."""
    tmp = tmp_path_factory.mktemp("sharded")
    config = _config(tmp)
    done = _run("fit", f"--config={config}", f"--trainer.default_root_dir={tmp}")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"tmp": tmp, "config": config, "last": tmp / "ckpts" / "last.ckpt"}


def _hostile_copy(sharded_run: dict, tmp_path: Path) -> tuple[Path, Path]:
    ckpt, marker = tmp_path / "hostile.ckpt", tmp_path / "ran"
    shutil.copytree(sharded_run["last"], ckpt)
    _plant_in_metadata(ckpt, marker)
    return ckpt, marker


def test_fit_refuses_a_hostile_sharded_checkpoint(sharded_run, tmp_path):
    ckpt, marker = _hostile_copy(sharded_run, tmp_path)
    config = sharded_run["config"]
    args = [f"--config={config}", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_steps=3"]
    done = _run("fit", *args, f"--ckpt_path={ckpt}", "--weights_only=true")
    assert done.returncode != 0
    assert "refused to load posix.mkdir" in done.stderr
    assert not marker.exists()


def test_export_refuses_a_hostile_sharded_checkpoint(sharded_run, tmp_path):
    ckpt, marker = _hostile_copy(sharded_run, tmp_path)
    args = [f"--config={sharded_run['config']}", f"--ckpt_path={ckpt}", f"--output={tmp_path}/x"]
    with pytest.raises(UnsafeCheckpointError, match=r"refused to load posix\.mkdir"):
        export_main(args)
    assert not marker.exists()
