"""Meta-device init on 2 CPU processes (gloo): exact weights on every rank, one reader.

A tiny Llama (random weights, non-trivial RMSNorm weights) is saved locally and fine-tuned for 2
DPO steps with ``FSDP2Strategy`` (float32) from that ``pretrained`` directory, through
``_meta_init_worker.py`` under torchrun, twice: full fine-tuning (with activation checkpointing;
the reference is a frozen sharded copy) and LoRA (the reference is the policy with its adapters
disabled). ``meta_init`` is left on auto, which is on for a sharded pretrained model: every rank
builds the model on the meta device and shards it; rank 0 alone calls ``from_pretrained`` (and
draws the adapters) and broadcasts the shards; the rotary ``inv_freq`` buffers are recomputed.
Before the first step each rank records the full logits of its scorers, compared here with a
plain ``from_pretrained`` model. Each run ends with an ``HFExport`` gathered from the shards.

That no rank but 0 holds a full copy is checked by counting ``from_pretrained`` calls per rank
(wrapped in the worker before anything loads) rather than by a memory measurement, which would
be noisy at this size. Launches are bounded and killed with their descendants, as in
``launch.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from _meta_init_worker import INPUT_IDS
from launch import TORCHRUN, finish, kill, start
from tiny import TINY
from transformers import AutoModelForCausalLM

from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer

pytestmark = pytest.mark.distributed

WORKER = Path(__file__).resolve().parent / "_meta_init_worker.py"


def _config(pretrained: Path) -> dict:
    return {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 2,
            "max_steps": 2,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "limit_val_batches": 0,
            "strategy": {
                "class_path": "lit_align.distributed.FSDP2Strategy",
                "init_args": {"param_dtype": "float32"},
            },
        },
        "model": {
            "policy": {"pretrained": str(pretrained), "tokenizer": "builtin:sort"},
            "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
            "activation_checkpointing": True,
        },
        "data": {"dataset": "builtin:sort", "builtin_rows": 16, "max_length": 64, "batch_size": 2},
    }


def _save_pretrained(path: Path) -> None:
    torch.manual_seed(0)
    cfg = PolicyConfig(tokenizer="builtin:sort", config=TINY)
    model = build_causal_lm(cfg, load_tokenizer(cfg))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:  # RMSNorm weights that a missed load would not reproduce
                param.normal_(1.0, 0.3)
    model.save_pretrained(path)


VARIANTS = {
    # full fine-tuning: the reference is a frozen, sharded copy loaded from the same state dict
    "full": ["--model.activation_checkpointing=true"],
    # LoRA: rank 0 also draws the adapters; the reference is the policy with adapters disabled
    "lora": [
        "--model.policy.lora.r=4",
        "--model.optimizer.lr=0.01",
        "--model.schedule.warmup_ratio=0",
    ],
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("meta_init") / "pretrained"
    _save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(VARIANTS))
def ranks(request, pretrained) -> tuple[Path, list[dict]]:
    """One 2-rank launch per variant, sequential (2 shared CPU cores)."""
    tmp = pretrained.parent / request.param
    tmp.mkdir()
    (tmp / "config.yaml").write_text(yaml.safe_dump(_config(pretrained)))
    cmd = [*TORCHRUN, str(WORKER), f"--out={tmp / 'out'}", f"--config={tmp / 'config.yaml'}"]
    export = [
        "--trainer.callbacks+=lit_align.callbacks.HFExport",
        f"--trainer.callbacks.dirpath={tmp / 'export'}",
    ]
    cmd += [f"--trainer.default_root_dir={tmp / 'run'}", *export, *VARIANTS[request.param]]
    outputs = [tmp / "out" / f"rank{r}.json" for r in (0, 1)]
    proc = start(cmd, tmp / "run.log")
    try:
        finish(proc, tmp / "run.log", [*outputs, tmp / "export" / "model.safetensors"])
    finally:
        kill(proc)
    return tmp, [json.loads(p.read_text()) for p in outputs]


def test_logits_equal_from_pretrained_on_both_ranks(ranks, pretrained):
    tmp, results = ranks
    plain = AutoModelForCausalLM.from_pretrained(pretrained).eval()
    with torch.no_grad():
        want = plain(input_ids=torch.tensor(INPUT_IDS)).logits  # (2, 8, V)
    for rank, result in enumerate(results):
        assert result["world_size"] == 2
        scorers = [k for k in ("policy_logits", "reference_logits") if k in result]
        assert scorers == ["policy_logits", "reference_logits"][: 1 if tmp.name == "lora" else 2]
        for key in scorers:
            diff = (torch.tensor(result[key]) - want).abs().max().item()
            print(f"\n{tmp.name} rank {rank} {key}: max |dlogit| vs from_pretrained {diff:.2e}")
            assert diff <= 1e-6, (rank, key, diff)


def test_only_rank0_reads_the_weights_and_every_parameter_is_sharded(ranks):
    tmp, (rank0, rank1) = ranks
    assert rank0["from_pretrained_calls"] == ["LlamaForCausalLM"]
    assert rank1["from_pretrained_calls"] == []
    assert "meta init: rank 0 loads" in (tmp / "run.log").read_text()
    assert bool(rank0["reference"]) is (tmp.name == "full")  # LoRA: no reference parameters
    for scorer in ("policy", "reference"):
        for name, p in rank0[scorer].items():
            other = rank1[scorer][name]
            assert p["dtensor"] and other["dtensor"], (scorer, name)
            assert p["local_rows"] + other["local_rows"] == p["rows"] > p["local_rows"], name


def test_training_starts_from_the_loaded_weights(ranks):
    _, results = ranks
    for result in results:
        assert len(result["losses"]) == 2
        assert result["losses"][0] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference


@pytest.mark.parametrize("ranks", ["lora"], indirect=True)
def test_lora_trains_adapters_only_and_exports_merged_from_shards(ranks, pretrained):
    tmp, (rank0, _) = ranks
    trainable = [n for n, p in rank0["policy"].items() if p["requires_grad"]]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    base = AutoModelForCausalLM.from_pretrained(pretrained).state_dict()
    merged = AutoModelForCausalLM.from_pretrained(tmp / "export").state_dict()
    assert merged.keys() == base.keys()
    adapted = {k for k in base if not torch.equal(merged[k], base[k])}
    assert adapted and all(k.endswith("_proj.weight") for k in adapted), adapted
