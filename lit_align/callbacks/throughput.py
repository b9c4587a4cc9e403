"""ThroughputLogger: tokens/s, samples/s and (estimated) FLOP/s and MFU of training."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_align.types import PreferenceBatch


class ThroughputLogger(Callback):
    """Logs ``throughput/tokens_per_sec``, ``throughput/samples_per_sec`` every micro-batch.

    Rates are per device, over the last ``window`` micro-batches (wall clock between batch ends,
    so data loading counts). Tokens are the batch's non-padding tokens (prompt + response of
    every sequence); samples are pairs (or unpaired rows). With the policy's parameter count
    ``N``, ``throughput/flops_per_sec`` estimates ``6·N`` FLOPs per token for the policy's forward
    and backward, plus ``2·N`` when a reference model runs each step (Kaplan et al. 2020); on a
    GPU whose peak Lightning knows, ``throughput/mfu`` divides it by that peak.

    Args:
        window: micro-batches the rates average over; >= 2.
    """

    def __init__(self, window: int = 20) -> None:
        if window < 2:
            raise ValueError(f"ThroughputLogger window must be >= 2, got {window}")
        self.window = window
        self._marks: deque[tuple[float, int, int]] = deque(maxlen=window)  # time, samples, tokens
        self._flops_per_token = 0
        self._peak: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        params = sum(p.numel() for p in pl_module.policy.parameters())
        needs_reference = pl_module.loss.capabilities()["requires_reference"]
        runs_reference = needs_reference and pl_module.reference_mode == "model"
        self._flops_per_token = (6 + 2 * runs_reference) * params
        self._peak = _peak_flops(trainer, pl_module)
        self._marks.clear()

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, PreferenceBatch):
            return
        samples, tokens = self._marks[-1][1:] if self._marks else (0, 0)
        now = time.perf_counter()
        tokens += int(batch.attention_mask.sum())
        self._marks.append((now, samples + batch.num_examples, tokens))
        if len(self._marks) < 2:
            return
        (t0, s0, n0), (t1, s1, n1) = self._marks[0], self._marks[-1]
        rates = {
            "throughput/tokens_per_sec": (n1 - n0) / (t1 - t0),
            "throughput/samples_per_sec": (s1 - s0) / (t1 - t0),
        }
        flops = rates["throughput/tokens_per_sec"] * self._flops_per_token
        if flops:
            rates["throughput/flops_per_sec"] = flops
        if flops and self._peak:
            rates["throughput/mfu"] = flops / self._peak
        pl_module.log_dict(rates, on_step=True, on_epoch=False, batch_size=1)


def _peak_flops(trainer: Trainer, pl_module: LightningModule) -> int | None:
    """The device's peak FLOP/s at the run's compute dtype, when Lightning knows it."""
    if pl_module.device.type != "cuda":
        return None
    precision = str(trainer.precision)
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else None
    dtype = dtype or next(pl_module.policy.parameters()).dtype
    return get_available_flops(pl_module.device, dtype)
