"""ConsoleProgress: a progress bar in a terminal, plain periodic lines in a log file."""

from __future__ import annotations

import math
import shutil
import sys
import time
from datetime import timedelta
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from tqdm.auto import tqdm

# (callback metric, label, format) shown on the bar and in each line, when logged
SHOWN = (
    ("loss", "loss", "{:.4g}"),
    ("rewards/margins", "margin", "{:.3g}"),
    ("rewards/accuracies", "acc", "{:.2f}"),
    ("learning_rate", "lr", "{:.2e}"),
    ("throughput/tokens_per_sec", "tok/s", "{:,.0f}"),
)
VALIDATION = (
    ("val_loss", "loss", "{:.4g}"),
    ("val_rewards/margins", "margin", "{:.3g}"),
    ("val_rewards/accuracies", "acc", "{:.3f}"),
)


class ConsoleProgress(ProgressBar):
    """Training progress in optimizer steps over the whole run, with the run's key metrics.

    In a terminal, one bar (``epoch 1/2 · step 30/250``, then loss, reward margin, accuracy,
    learning rate, tokens/s). Otherwise (a log file, a SLURM job) one plain line every
    ``every_n_steps`` optimizer steps (step, epoch, the metrics, elapsed time and ETA), and a
    line after each validation.

    Args:
        every_n_steps: optimizer steps between plain lines; None: ``trainer.log_every_n_steps``.
        terminal: draw a bar (True) or print lines (False); None: whether stdout is a terminal.
    """

    def __init__(self, every_n_steps: int | None = None, terminal: bool | None = None) -> None:
        super().__init__()
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"ConsoleProgress every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.terminal = sys.stdout.isatty() if terminal is None else terminal
        self._enabled = True
        self._bar: tqdm | None = None
        self._start = 0.0
        self._printed_step = -1
        self._epoch_label = ""

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.write(" ".join(map(str, args)))
        else:
            print(*args, **kwargs, flush=True)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.monotonic()
        if self._enabled:
            params = sum(p.numel() for p in pl_module.policy.parameters() if p.requires_grad)
            loss = type(pl_module.loss).__name__
            self.print(f"training {params:,} parameters with {loss}; {self._total(trainer)} steps")
        if self._enabled and self.terminal:
            total = self._total(trainer)
            self._bar = tqdm(
                total=total,
                initial=trainer.global_step,
                ncols=shutil.get_terminal_size().columns,  # falls back to $COLUMNS, then 80
                file=sys.stdout,
                unit="step",
                leave=True,
            )

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._enabled:
            return
        step, every = trainer.global_step, self.every_n_steps or trainer.log_every_n_steps
        self._epoch_label = self._epoch(trainer)  # at train end the loop has counted the epoch
        if self._bar is not None:
            self._bar.set_description(self._epoch_label, refresh=False)
            self._bar.set_postfix_str(_format(trainer.callback_metrics, SHOWN), refresh=False)
            self._bar.update(step - self._bar.n)
        elif step != self._printed_step and (step % max(every, 1) == 0 or step == 1):
            self._printed_step = step
            self.print(self._line(trainer))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled and not trainer.sanity_checking and trainer.state.fn == "fit":
            metrics = _format(trainer.callback_metrics, VALIDATION)
            self.print(f"validation at step {trainer.global_step}: {metrics}")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._enabled and trainer.global_step != self._printed_step:
            self.print(self._line(trainer))

    def _total(self, trainer: Trainer) -> int | None:
        total = trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) else None

    def _epoch(self, trainer: Trainer) -> str:
        epochs = trainer.max_epochs
        last = f"/{epochs}" if epochs is not None and epochs > 0 else ""
        return f"epoch {trainer.current_epoch + 1}{last}"

    def _line(self, trainer: Trainer) -> str:
        step, total = trainer.global_step, self._total(trainer)
        elapsed = time.monotonic() - self._start
        eta = ""
        if total and step:
            eta = f" eta {_clock(elapsed / step * (total - step))}"
        metrics = _format(trainer.callback_metrics, SHOWN)
        of = f"/{total}" if total else ""
        return f"step {step}{of} ({self._epoch_label}) {metrics} elapsed {_clock(elapsed)}{eta}"


def _format(metrics: dict, shown: tuple) -> str:
    parts = [
        f"{label} {fmt.format(float(metrics[key]))}" for key, label, fmt in shown if key in metrics
    ]
    return " ".join(parts)


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
