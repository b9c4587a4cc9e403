"""FSDP2Strategy in one process: selection from the CLI, argument and launch validation.

Nothing here joins a process group: every check fails before ``setup_environment`` would.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import yaml
from lightning.fabric.plugins.environments import (
    LightningEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.tensor import DTensor

from lit_align.distributed import FSDP2Strategy, launcher_mismatch, shard_for_trainer
from lit_align.lightning_cli import run_lightning_cli
from lit_align.models import build_causal_lm, load_tokenizer
from lit_align.scorer import CausalLMScorer

TORCHRUN_2X2 = {"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "3", "LOCAL_RANK": "1"}
SLURM_2X4 = {
    "SLURM_NTASKS": "8",
    "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_NNODES": "2",
    "SLURM_JOB_NAME": "align",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


def test_cli_selects_the_preset_by_name_and_by_class_path(tmp_path):
    cli = run_lightning_cli(["--trainer.strategy=fsdp2", "--trainer.devices=2"], run=False)
    strategy = cli.trainer.strategy
    assert isinstance(strategy, FSDP2Strategy) and strategy.mp_policy.param_dtype == torch.bfloat16
    config = {
        "trainer": {
            "devices": 2,
            "num_nodes": 3,
            "strategy": {
                "class_path": "lit_align.distributed.FSDP2Strategy",
                "init_args": {"param_dtype": "float32", "reshard_after_forward": False},
            },
        }
    }
    path = tmp_path / "fsdp2.yaml"
    path.write_text(yaml.safe_dump(config))
    strategy = run_lightning_cli([f"--config={path}"], run=False).trainer.strategy
    assert strategy.mp_policy.param_dtype == torch.float32 and not strategy.reshard_after_forward
    assert (strategy.num_nodes, strategy.num_processes) == (3, 2)


def test_bad_dtype_names_the_field():
    with pytest.raises(ValueError, match=r"init_args.param_dtype must be one of .*got 'fp8'"):
        FSDP2Strategy(param_dtype="fp8")


@pytest.mark.parametrize(
    ("strategy", "precision", "message"),
    [
        (FSDP2Strategy(cpu_offload=True), "32-true", r"cpu_offload=true needs CUDA devices"),
        (FSDP2Strategy(), "bf16-mixed", r"needs --trainer.precision=32-true, got 'bf16-mixed'"),
    ],
)
def test_setup_refuses_what_cannot_work(strategy, precision, message):
    trainer = Trainer(strategy=strategy, precision=precision, accelerator="cpu", devices=1)
    with pytest.raises(ValueError, match=message):
        trainer.strategy.setup_environment()


@pytest.mark.parametrize(
    ("env", "cls", "devices", "nodes", "message"),
    [
        (TORCHRUN_2X2, TorchElasticEnvironment, 2, 2, None),
        (
            TORCHRUN_2X2,
            TorchElasticEnvironment,
            4,
            1,
            r"torchrun started 4 processes \(2 per node\), but the trainer expects "
            r"--trainer.num_nodes=1 x --trainer.devices=4 = 4.*"
            r"\(here: --trainer.devices=2 --trainer.num_nodes=2\)",
        ),
        (SLURM_2X4, SLURMEnvironment, 4, 2, None),
        (
            SLURM_2X4,
            SLURMEnvironment,
            8,
            1,
            r"SLURM started 8 processes \(4 per node\).*--trainer.devices=4 --trainer.num_nodes=2",
        ),
        ({"LOCAL_RANK": "0"}, LightningEnvironment, 3, 1, None),  # Lightning sizes it itself
    ],
)
def test_launcher_mismatch(monkeypatch, env, cls, devices, nodes, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    problem = launcher_mismatch(cls(), devices, nodes)
    if message is None:
        assert problem is None
    else:
        assert problem is not None and re.search(message, problem), problem


def test_plain_model_parallel_is_refused_and_no_strategy_shards_nothing(tiny_policy):
    model = build_causal_lm(tiny_policy, load_tokenizer(tiny_policy))
    scorer = CausalLMScorer(model)
    with pytest.raises(ValueError, match=r"use class_path: lit_align.distributed.FSDP2Strategy"):
        shard_for_trainer(SimpleNamespace(strategy=ModelParallelStrategy()), scorer)
    shard_for_trainer(None, scorer)
    assert not any(isinstance(p, DTensor) for p in scorer.parameters())
