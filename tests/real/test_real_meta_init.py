"""FSDP2 meta-device init from the real checkpoint on 2 CPU processes (gloo): every rank builds
SmolLM2 on the meta device, rank 0 alone reads the weights and broadcasts the shards, and the
logits of policy and reference before the first step equal ``from_pretrained``'s.

The launch reuses ``tests/distributed`` (``_meta_init_worker.py`` under torchrun, bounded with
``launch.py``); one DPO step on 2 UltraFeedback pairs at ``max_length`` 64 follows.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
from _meta_init_worker import INPUT_IDS  # noqa: E402
from launch import TORCHRUN, finish, kill, start  # noqa: E402

pytestmark = [pytest.mark.real, pytest.mark.distributed]

WORKER = Path(__file__).resolve().parents[1] / "distributed" / "_meta_init_worker.py"


def _config(pretrained: Path, data: Path) -> dict:
    trainer = {
        "accelerator": "cpu",
        "devices": 2,
        "max_steps": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "strategy": {
            "class_path": "lit_align.distributed.FSDP2Strategy",
            "init_args": {"param_dtype": "float32"},
        },
    }
    return {
        "seed_everything": 0,
        "trainer": trainer,
        "model": {
            "policy": {"pretrained": str(pretrained)},
            "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
        },
        "data": {
            "dataset": str(data),
            "format": "conversational",
            "max_length": 64,
            "batch_size": 1,
        },
    }


@pytest.fixture(scope="module")
def ranks(real_model_dir, ultrafeedback, tmp_path_factory) -> tuple[Path, list[dict]]:
    tmp = tmp_path_factory.mktemp("meta_init_real")
    data = tmp / "pairs.jsonl"
    data.write_text("\n".join((ultrafeedback / "train.jsonl").read_text().splitlines()[:2]))
    (tmp / "config.yaml").write_text(yaml.safe_dump(_config(real_model_dir, data)))
    cmd = [*TORCHRUN, str(WORKER), f"--out={tmp / 'out'}", f"--config={tmp / 'config.yaml'}"]
    cmd += [f"--trainer.default_root_dir={tmp / 'run'}", f"--data.cache_dir={tmp / 'cache'}"]
    outputs = [tmp / "out" / f"rank{r}.json" for r in (0, 1)]
    proc = start(cmd, tmp / "run.log")
    try:
        finish(proc, tmp / "run.log", outputs, timeout=300)  # two ranks load a 134 M model
    finally:
        kill(proc)
    return tmp, [json.loads(p.read_text()) for p in outputs]


def test_sharded_logits_equal_from_pretrained(ranks, real_model):
    tmp, results = ranks
    with torch.no_grad():
        want = real_model(input_ids=torch.tensor(INPUT_IDS)).logits  # (2, 8, V)
    for rank, result in enumerate(results):
        for key in ("policy_logits", "reference_logits"):
            diff = (torch.tensor(result[key]) - want).abs().max().item()
            print(f"\nrank {rank} {key}: max |dlogit| vs from_pretrained {diff:.2e}")
            assert diff <= 1e-5, (rank, key, diff)
        assert result["losses"] == [pytest.approx(math.log(2), abs=1e-6)]
    assert results[0]["from_pretrained_calls"] == ["LlamaForCausalLM"]
    assert results[1]["from_pretrained_calls"] == []  # rank 1 never reads the weights
    assert "meta init: rank 0 loads" in (tmp / "run.log").read_text()
