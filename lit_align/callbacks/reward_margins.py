"""RewardMarginMonitor: rewards, margins and log-probs synced across ranks, per window."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torchmetrics import CatMetric, MeanMetric

from lit_align.callbacks.readers import step_record, tensorboard
from lit_align.collectives import rank_mean
from lit_align.types import StepRecord

_MEANS = (
    "chosen_rewards",
    "rejected_rewards",
    "margin",
    "accuracy",
    "chosen_logps",
    "rejected_logps",
    "chosen_logps_drift",
    "rejected_logps_drift",
    "target_distance",
    "target_signed",
)


class RewardMarginMonitor(Callback):
    """Windowed means of the preference quantities, synced over ranks, with margin quantiles.

    Every ``window`` training micro-batches it computes (a torchmetrics collective on every rank)
    and writes to every logger at ``trainer.global_step`` — independently of
    ``log_every_n_steps`` — under ``prefix``:

    * ``chosen_rewards``, ``rejected_rewards``, ``chosen_logps``, ``rejected_logps``: means over
      all examples of the window on all ranks (log-probs are sequence sums, in nats);
    * ``margin`` and ``accuracy`` (fraction of pairs with margin > 0), for paired batches;
    * ``chosen_logps_drift``, ``rejected_logps_drift``: log-probs minus their mean at the first
      step of the run (saved in checkpoints, so a resumed run keeps the original start);
    * ``target_distance`` = mean ``|margin − target|`` and ``target_signed`` = mean
      ``margin − target``, for losses with a finite target (``record.target_margin``: SPO, IPO);
    * ``margin_p10`` …: quantiles of the window's margins, and a TensorBoard histogram
      ``<prefix>margins`` when the trainer has a TensorBoard logger and ``histograms`` is set.

    The last written values are kept in :attr:`last_values`. A partial window is not saved: after a
    resume the first window is shorter.

    Args:
        window: training micro-batches per window; >= 1.
        quantiles: margin quantiles to log, each in ``[0, 1]`` (logged as ``margin_p<100·q>``).
        histograms: write the window's margins as a TensorBoard histogram.
        prefix: metric name prefix.
    """

    def __init__(
        self,
        window: int = 20,
        quantiles: Sequence[float] = (0.1, 0.5, 0.9),
        histograms: bool = True,
        prefix: str = "preference/",
    ) -> None:
        if window < 1:
            raise ValueError(f"RewardMarginMonitor window must be >= 1, got {window}")
        if not all(0.0 <= q <= 1.0 for q in quantiles):
            raise ValueError(f"RewardMarginMonitor quantiles must be in [0, 1], got {quantiles}")
        self.window = window
        self.quantiles = tuple(float(q) for q in quantiles)
        self.histograms = histograms
        self.prefix = prefix
        # "disable": a NaN in the window shows as NaN rather than being silently dropped
        self._means = {name: MeanMetric(nan_strategy="disable") for name in _MEANS}
        self._margins = CatMetric(nan_strategy="disable")
        self._updated: set[str] = set()
        self._start: list[float] | None = None  # [chosen, rejected] log-prob means at step 0
        self._seen = 0
        self.last_values: dict[str, float] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for metric in (*self._means.values(), self._margins):
            metric.to(pl_module.device)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        record = step_record(outputs)
        if record is None:
            return
        self._update(record)
        self._seen += 1
        if self._seen % self.window == 0:
            self._flush(trainer)

    def _update(self, record: StepRecord) -> None:
        chosen, rejected = record.chosen_logps, record.rejected_logps  # (B,), (B,)
        if self._start is None or math.isnan(sum(self._start)):  # NaN: no rows of a kind yet
            self._start = rank_mean(torch.stack([chosen.mean(), rejected.mean()])).tolist()
        values = {
            "chosen_rewards": record.chosen_rewards,
            "rejected_rewards": record.rejected_rewards,
            "chosen_logps": chosen,
            "rejected_logps": rejected,
            "chosen_logps_drift": chosen - self._start[0],
            "rejected_logps_drift": rejected - self._start[1],
        }
        if record.paired:  # unpaired rows are unrelated: no per-pair margin exists
            margins = record.margins  # (B,)
            values |= {"margin": margins, "accuracy": (margins > 0).float()}
            self._margins.update(margins)
            if record.target_margin is not None:
                gap = margins - record.target_margin  # (B,)
                values |= {"target_distance": gap.abs(), "target_signed": gap}
        for name, value in values.items():
            self._means[name].update(value)
        self._updated |= values.keys()  # the same names on every rank: same loss, same format

    def _flush(self, trainer: Trainer) -> None:
        """Compute (a collective on every rank), log and reset the window."""
        values = {name: self._means[name].compute() for name in sorted(self._updated)}
        margins = self._margins.compute() if "margin" in self._updated else None
        if margins is not None and margins.numel():
            levels = torch.quantile(margins.float(), torch.tensor(self.quantiles).to(margins))
            values |= {f"margin_p{round(100 * q)}": v for q, v in zip(self.quantiles, levels)}
        self.last_values = {f"{self.prefix}{k}": float(v) for k, v in values.items()}
        for logger in trainer.loggers:
            logger.log_metrics(self.last_values, step=trainer.global_step)
        writer = tensorboard(trainer) if self.histograms else None
        if writer is not None and margins is not None:
            finite = margins[torch.isfinite(margins)]
            if finite.numel():
                writer.add_histogram(f"{self.prefix}margins", finite.cpu(), trainer.global_step)
        for metric in (*self._means.values(), self._margins):
            metric.reset()
        self._updated = set()

    def state_dict(self) -> dict[str, Any]:
        return {"start": self._start, "seen": self._seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._start = state_dict["start"]
        self._seen = state_dict["seen"]
