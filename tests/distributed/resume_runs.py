"""Shared parts of the kill-and-resume tests: the run config, the commands, reading the results.

Every run is the real ``lit-align fit`` command: a tiny Llama trained with DPO on 48 pairs of the
embedded task, 6 optimizer steps per epoch (global batch 8), 2 epochs, warm-up then cosine decay
(so the scheduler's position matters), gradient clipping, ``ModelCheckpoint(every_n_train_steps,
save_last=True, save_top_k=-1)`` and an ``HFExport`` at the end. ``_recorders.BatchFingerprints``
records every batch each rank trains on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml
from launch import LIT_ALIGN, clean_env
from safetensors.torch import load_file
from tiny import TINY

HERE = Path(__file__).resolve().parent
PAIRS = 48
GLOBAL_BATCH = 8
STEPS_PER_EPOCH = PAIRS // GLOBAL_BATCH  # 6
EPOCHS = 2


def write_config(
    path: Path, every_n_train_steps: int, ranks: int, trainer: dict | None = None
) -> Path:
    """The runs' config for ``ranks`` processes; ``trainer`` overrides are merged in."""
    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {
            "every_n_train_steps": every_n_train_steps,
            "save_last": True,
            "save_top_k": -1,
        },
    }
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": EPOCHS,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "gradient_clip_val": 0.25,
            "callbacks": [checkpoint, {"class_path": "lit_align.callbacks.HFExport"}],
            **(trainer or {}),
        },
        "model": {
            "policy": {"tokenizer": "builtin:sort", "config": TINY},
            "loss": {"class_path": "lit_align.losses.DPO", "init_args": {"beta": 0.1}},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.003}},
            "schedule": {"warmup_ratio": 0.1, "decay": "cosine"},
        },
        "data": {
            "dataset": "builtin:sort",
            "builtin_rows": PAIRS,
            "max_length": 64,
            "batch_size": GLOBAL_BATCH // ranks,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def fit_command(config: Path, root: Path, batches: Path, *args: str) -> list[str]:
    """``lit-align fit``: checkpoints and export under ``root``, batch records in ``batches``."""
    return [
        *LIT_ALIGN,
        "fit",
        f"--config={config}",
        f"--trainer.default_root_dir={root}",
        "--trainer.callbacks+=_recorders.BatchFingerprints",
        f"--trainer.callbacks.dirpath={batches}",
        *args,
    ]


def recorder_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: a clean one) with this directory importable (``_recorders``)."""
    env = dict(env or clean_env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return env


def batches(dirpath: Path, rank: int = 0) -> list[dict]:
    """The batch records a rank wrote, in order."""
    lines = (dirpath / f"batches-rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def stitch(killed: list[dict], resumed: list[dict], resumed_at: int) -> list[dict]:
    """What the interrupted run trained on for good: its batches before the checkpoint, then
    the resumed run's (the killed run's batches after the checkpoint were lost with it)."""
    return [b for b in killed if b["step"] < resumed_at] + resumed


def checkpoint_step(path: Path) -> int:
    """``global_step`` of a single-file or sharded (directory) checkpoint."""
    meta = path / "meta.pt" if path.is_dir() else path
    return torch.load(meta, map_location="cpu", weights_only=True)["global_step"]


def weight_diff(a: Path, b: Path) -> float:
    """Max |Δ| between two exported ``model.safetensors`` files with the same tensors."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and wa
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)
