"""Tiny in-process fits for the monitor tests, and callbacks that inject faults or record state."""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny import TINY

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.losses import DPO, PreferenceLoss
from lit_align.models import PolicyConfig
from lit_align.module import AlignmentModule
from lit_align.optim import LRSchedule


def fit(
    tmp_path: Path,
    callbacks: list[Callback],
    steps: int,
    loss: PreferenceLoss | None = None,
    lr: float = 0.003,
    batch_size: int = 4,
    rows: int | None = None,
    checkpoint: Callback | None = None,
    ckpt_path: str | None = None,
) -> Trainer:
    """Fit the tiny policy for ``steps`` optimizer steps at a constant ``lr`` (no validation).

    The run directory (``trainer.log_dir``) is ``tmp_path/run/v``, with a TensorBoard log.
    """
    seed_everything(0)
    module = AlignmentModule(
        policy=PolicyConfig(tokenizer="builtin:sort", config=dict(TINY)),
        loss=loss or DPO(beta=0.1),
        optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.0),
        schedule=LRSchedule(warmup_steps=0, decay="constant"),
    )
    data = PreferenceDataModule(
        builtin_rows=rows or steps * batch_size, batch_size=batch_size, max_length=64
    )
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=TensorBoardLogger(tmp_path, name="run", version="v"),
        callbacks=[*callbacks, *([checkpoint] if checkpoint else [])],
        enable_checkpointing=checkpoint is not None,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        gradient_clip_val=1.0,
    )
    module.connect_data(data)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainer


def events(tmp_path: Path) -> list[dict]:
    """The rows of the run's ``instability_events.jsonl``."""
    lines = (tmp_path / "run" / "v" / "instability_events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def tensorboard_log(tmp_path: Path) -> EventAccumulator:
    acc = EventAccumulator(
        str(tmp_path / "run" / "v"), size_guidance={"tensors": 0, "histograms": 0, "scalars": 0}
    )
    acc.Reload()
    return acc


class NaNLossAt(DPO):
    """DPO whose loss is NaN on its ``at``-th call (0-based; training calls only, no validation)."""

    def __init__(self, at: int, beta: float = 0.1) -> None:
        super().__init__(beta=beta)
        self.at, self.calls = at, 0

    def forward(self, policy, reference, batch):
        out = super().forward(policy, reference, batch)
        self.calls += 1
        if self.calls - 1 != self.at:
            return out
        return dataclasses.replace(out, loss=out.loss * float("nan"))  # NaN gradients too


class ScaleGradsAt(Callback):
    """Multiplies every gradient by ``factor`` after the backward of the given optimizer steps.

    Callbacks' ``on_after_backward`` runs before the module's, which computes ``grad_norm``: the
    module's norm (and everything after it) sees the scaled gradients.
    """

    def __init__(self, steps: tuple[int, ...], factor: float = 1e6) -> None:
        self.steps, self.factor = steps, factor

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step in self.steps:
            for p in pl_module.policy.parameters():
                if p.grad is not None:
                    p.grad.mul_(self.factor)


class Probe(Callback):
    """Records, per optimizer step, the weights before and after it, the LR it used, the
    optimizer's update count after it, and the step record.

    Put it after the monitors: callbacks run in list order, so it sees what they did.
    """

    def __init__(self) -> None:
        self.before, self.after, self.lr, self.records, self.adam_steps = {}, {}, {}, [], {}

    @staticmethod
    def weights(pl_module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in pl_module.policy.state_dict().items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before[trainer.global_step] = self.weights(pl_module)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.lr[trainer.global_step] = optimizer.param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after[trainer.global_step - 1] = self.weights(pl_module)
        state = next(iter(trainer.optimizers[0].state.values()))  # AdamW's updates so far
        self.adam_steps[trainer.global_step - 1] = int(state["step"])
        self.records.append(outputs["record"])


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
