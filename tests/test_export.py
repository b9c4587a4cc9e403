"""HF export: from a live run, from a single-file checkpoint and from a distributed checkpoint.

A sharded checkpoint written by a real 2-rank FSDP2 run is exported in
``distributed/test_resume_2node.py``.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from lit_align.callbacks import HFExport
from lit_align.export import load_checkpoint_weights, main, module_from_run_config
from lit_align.lightning_cli import run_lightning_cli

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart_sft.yaml"
TINY = (
    "--model.policy.config={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, "
    "num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64}"
)


def _fit(tmp_path, *args: str) -> Path:
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
            *args,
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


def test_lora_exports_merged_or_adapters_live_and_from_checkpoint(tmp_path, monkeypatch):
    """``HFExport(merge_adapters=...)`` and ``lit-align export --merge_adapters`` agree."""
    monkeypatch.setattr(sys, "argv", ["lit-align"])  # run_lightning_cli gets its own args
    lora = ["--model.policy.lora.r=4", "--model.policy.lora.alpha=8", "--trainer.max_steps=2"]
    adapters = ["--trainer.callbacks+=lit_align.callbacks.HFExport"]
    adapters += ["--trainer.callbacks.dirpath=adapters", "--trainer.callbacks.merge_adapters=false"]
    run = _fit(tmp_path, *lora, *adapters)
    common = ["--config", str(run / "config.yaml")]
    common += ["--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    main([*common, "--output", str(tmp_path / "merged")])
    main([*common, "--output", str(tmp_path / "adapters"), "--merge_adapters=false"])
    _same_weights(str(tmp_path / "merged"), str(run / "export"))  # both load as plain models
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name in merged.state_dict())
    live = load_file(run / "adapters" / "adapter_model.safetensors")
    exported = load_file(tmp_path / "adapters" / "adapter_model.safetensors")
    assert live.keys() == exported.keys() and all("lora" in key for key in live)
    assert any(value.abs().max() > 0 for key, value in live.items() if "lora_B" in key)  # trained
    assert all(torch.equal(live[key], exported[key]) for key in live)
    assert not (tmp_path / "adapters" / "model.safetensors").exists()


def test_hf_export_rejects_an_empty_directory():
    with pytest.raises(ValueError, match="HFExport dirpath must be a non-empty path"):
        HFExport(dirpath="")
