"""Where evaluation runs: device and dtype choice, policy loading, the training ``max_length``.

A policy exported by ``HFExport`` lives in ``<run dir>/export`` next to the run's ``config.yaml``
(written by ``lit-align fit``); settings are read from there when present.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch
import yaml
from transformers import AutoModelForCausalLM, PreTrainedModel

from lit_align.data.datamodule import PreferenceDataModule

RUN_CONFIG = "config.yaml"


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; other values pass through."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str = "auto") -> torch.dtype:
    """``auto`` → bfloat16 on a GPU that supports it, else float32; or a ``torch`` dtype name.

    Raises:
        ValueError: If ``dtype`` names no floating-point torch dtype (change ``--dtype``).
    """
    if dtype == "auto":
        on_gpu = resolve_device(device).startswith("cuda")
        return torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(
            f"--dtype must be auto or a torch float dtype (bfloat16, ...), got {dtype!r}"
        )
    return value


def check_model_dir(path: str, flag: str) -> None:
    """Raise ``FileNotFoundError`` naming ``flag`` when the model directory does not exist."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{flag}: model directory {path!r} does not exist (train it first)")


def load_policy(path: str, device: str, dtype: torch.dtype) -> PreTrainedModel:
    """A causal LM directory loaded in ``dtype`` on ``device``, in eval mode."""
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()


def run_config(model_dir: str) -> dict[str, Any] | None:
    """The ``lit-align fit`` config of the run that exported ``model_dir``, if it is there."""
    for where in (model_dir, os.path.dirname(os.path.normpath(model_dir))):
        path = os.path.join(where, RUN_CONFIG)
        if os.path.isfile(path):
            with open(path) as f:
                return yaml.safe_load(f)
    return None


def run_max_length(model_dir: str) -> int:
    """``data.max_length`` of the run that trained ``model_dir``, else the data module default."""
    data = (run_config(model_dir) or {}).get("data") or {}
    data = data.get("init_args", data)
    if data.get("max_length"):
        return int(data["max_length"])
    return inspect.signature(PreferenceDataModule).parameters["max_length"].default
