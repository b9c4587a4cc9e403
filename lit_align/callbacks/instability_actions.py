"""What :class:`~lit_align.callbacks.instability.InstabilityMonitor` does about an event.

``skip_step`` (:func:`skip_step`), ``reduce_lr`` (:func:`reduce_lr`), ``rollback``
(:func:`rollback`) and ``stop`` (:func:`save_stop`), and the event log every event is written to
(:func:`write_event`). Each takes only what it acts on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_align.callbacks.readers import tensorboard

LOG = "log"
SKIP_STEP = "skip_step"
REDUCE_LR = "reduce_lr"
ROLLBACK = "rollback"
STOP = "stop"
ACTIONS = (LOG, SKIP_STEP, REDUCE_LR, ROLLBACK, STOP)
LATE_ACTIONS = (LOG, REDUCE_LR, ROLLBACK, STOP)  # kinds seen after the update can't skip
DROP_UPDATE = (SKIP_STEP, ROLLBACK, STOP)  # gradient kinds with these actions skip their update
EVENT_LOG = "instability_events.jsonl"  # in the run directory


def skip_step(optimizer: torch.optim.Optimizer) -> None:
    """No update from this step's gradients: parameters without gradients are not updated."""
    optimizer.zero_grad(set_to_none=True)


def reduce_lr(trainer: Trainer, factor: float, floor: float) -> str:
    """Scale every learning rate (and the schedulers' ``base_lrs``) by ``factor``, floor
    ``floor``; the detail that says the new rates."""
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            group["lr"] = max(group["lr"] * factor, floor)
    for config in trainer.lr_scheduler_configs:  # else the next scheduler step restores it
        if hasattr(scheduler := config.scheduler, "base_lrs"):
            scheduler.base_lrs = [max(lr * factor, floor) for lr in scheduler.base_lrs]
    lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
    return f"lr now {', '.join(f'{lr:.4g}' for lr in lrs)}"


@dataclass(frozen=True)
class Rollback:
    """The last rollback: the checkpoint restored, its global step, restores of it in a row."""

    path: str
    step: int | None
    repeats: int


def rollback(
    trainer: Trainer, pl_module: LightningModule, last: Rollback | None, max_repeats: int
) -> tuple[bool, str, Rollback | None]:
    """Restore the checkpoint callback's last (else best) checkpoint, keeping the learning rates.

    Returns whether the run may go on (False: no checkpoint, or restored more than
    ``max_repeats`` times in a row), the detail for the event, and the rollback to remember.
    """
    ckpt = trainer.checkpoint_callback
    path = (ckpt.last_model_path or ckpt.best_model_path) if ckpt is not None else ""
    if not path:
        return False, "no checkpoint to roll back to", last
    lrs = [[g["lr"] for g in opt.param_groups] for opt in trainer.optimizers]  # to keep
    checkpoint = trainer.strategy.load_checkpoint(path, weights_only=True)
    trainer.strategy.load_model_state_dict(checkpoint, strict=pl_module.strict_loading)
    try:
        trainer.strategy.load_optimizer_state_dict(checkpoint)
        restored = "model and optimizer"
    except KeyError:
        restored = "weights only, it holds no optimizer state"
    for optimizer, group_lrs in zip(trainer.optimizers, lrs):
        for group, lr in zip(optimizer.param_groups, group_lrs):
            group["lr"] = lr  # the schedule (and any reduce_lr) continues
        optimizer.zero_grad(set_to_none=True)
    step = checkpoint.get("global_step")
    same = last is not None and (last.path, last.step) == (str(path), step)
    now = Rollback(str(path), step, last.repeats + 1 if same else 1)
    detail = f"restored the step-{step} checkpoint {path}: {restored}"
    if now.repeats > max_repeats:
        return False, f"{detail}, {now.repeats} times in a row", now
    return True, detail, now


def save_stop(trainer: Trainer, log_dir: str, step: int) -> str:
    """Save ``instability-stop-step=<step>.ckpt`` (a collective) and return its path."""
    path = os.path.join(log_dir, f"instability-stop-step={step}.ckpt")
    trainer.save_checkpoint(path)  # every rank took the same decision
    return path


def write_event(trainer: Trainer, log_dir: str, event: dict[str, Any]) -> None:
    """Append ``event`` to the event log, TensorBoard's text and the console (rank 0)."""
    value = float(event["value"])  # NaN and inf are written as strings: JSON has neither
    line = json.dumps(event | {"value": value if math.isfinite(value) else str(value)})
    if not trainer.is_global_zero:
        return
    with open(os.path.join(log_dir, EVENT_LOG), "a") as log:
        log.write(line + "\n")
    writer = tensorboard(trainer)
    if writer is not None:
        writer.add_text("instability/events", line, event["step"])
    _announce(trainer, event)


def _announce(trainer: Trainer, event: dict[str, Any]) -> None:
    """One readable console line: ``instability at step 120: grad_spike 9.1 > 8 (log); ...``."""
    value, threshold = event["value"], event["threshold"]
    bound = f" > {threshold:.4g}" if threshold is not None else ""
    text = f"instability at step {event['step']}: {event['kind']} {float(value):.4g}{bound}"
    line = join(f"{text} ({event['action']})", event["detail"])
    bar = getattr(trainer, "progress_bar_callback", None)
    bar.print(line) if bar is not None else rank_zero_info(line)


def join(*parts: str) -> str:
    """The non-empty ``parts`` joined by ``; ``."""
    return "; ".join(part for part in parts if part)
