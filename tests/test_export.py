"""HF export: from a live run, from a single-file checkpoint and from a distributed checkpoint."""

import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from transformers import AutoModelForCausalLM

from lit_align.cli import run_lightning_cli
from lit_align.export import load_checkpoint_weights, module_from_run_config

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart_sft.yaml"
TINY = (
    "--model.policy.config={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
    "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}"
)


def _fit(tmp_path) -> Path:
    run_lightning_cli(
        [
            "fit",
            f"--config={CONFIG}",
            TINY,
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--data.builtin_rows=64",
            "--data.batch_size=8",
        ]
    )
    return tmp_path / "quickstart" / "sft"


def _same_weights(a: str, b: str) -> None:
    sa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    sb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_export_from_checkpoint_file_matches_live_export(tmp_path):
    run = _fit(tmp_path)
    out = tmp_path / "from_ckpt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lit_align.cli",
            "export",
            "--config",
            str(run / "config.yaml"),
            "--ckpt_path",
            str(run / "checkpoints" / "last.ckpt"),
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    _same_weights(str(out), str(run / "export"))


def test_distributed_checkpoint_directory_loads(tmp_path):
    run = _fit(tmp_path)
    module = module_from_run_config(str(run / "config.yaml"))
    module.configure_model()
    trained = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    dcp.save({"state_dict": trained}, checkpoint_id=str(tmp_path / "dcp"))
    load_checkpoint_weights(module, str(tmp_path / "dcp"))
    for key, value in module.state_dict().items():
        assert torch.equal(value, trained[key]), key
