"""InstabilityMonitor: sees training go wrong, records it, and skips, slows, rolls back or stops.

A thin callback: the detectors (:mod:`lit_align.callbacks.instability_detectors`) see the
values, the actions (:mod:`lit_align.callbacks.instability_actions`) act; this class feeds the
one to the other at the right hook and keeps the counts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_align.callbacks.instability_actions import (
    ACTIONS,
    DROP_UPDATE,
    EVENT_LOG,
    LATE_ACTIONS,
    LOG,
    REDUCE_LR,
    ROLLBACK,
    SKIP_STEP,
    STOP,
    Rollback,
    join,
    reduce_lr,
    rollback,
    save_stop,
    skip_step,
    write_event,
)
from lit_align.callbacks.instability_detectors import (
    GRAD_SPIKE,
    GRADIENT_KINDS,
    KINDS,
    LIKELIHOOD_DISPLACEMENT,
    LOSS_SPIKE,
    MARGIN_DIVERGENCE,
    NONFINITE_GRAD,
    NONFINITE_LOSS,
    REJECTED_COLLAPSE,
    Event,
    LevelDetector,
    LogpStart,
    MarginGrowthDetector,
    SpikeDetector,
    WindowAverage,
    WindowDetectors,
    robust_z,
)
from lit_align.callbacks.readers import step_record
from lit_align.collectives import rank_mean
from lit_align.losses.base import PreferenceLoss
from lit_align.types import StepRecord

__all__ = ["EVENT_LOG", "InstabilityError", "InstabilityMonitor", "KINDS", "robust_z"]
DEFAULT_ACTIONS = {NONFINITE_GRAD: SKIP_STEP}  # a NaN update would ruin every weight


@dataclass
class ActionState:
    """What the monitor remembers of its actions; saved in checkpoints with the detectors'."""

    counts: dict[str, int] = field(default_factory=dict)  # events by kind
    rollback: Rollback | None = None  # the last rollback
    skipped: int = 0  # optimizer steps skipped by skip_step, in all
    skip_streak: int = 0  # ... in a row, up to the last step


class InstabilityError(RuntimeError):
    """Training cannot go on: ``skip_step`` fired on too many steps in a row."""


class InstabilityMonitor(Callback):
    """Detects training instability, records each event and takes its configured action.

    Gradient kinds watch the module's global ``grad_norm`` before the optimizer step, the loss
    kinds the loss after it, the window kinds means over ``window`` micro-batches (log-probs are
    sequence sums, in nats) and fire when their condition starts to hold. Inputs are global or
    all-reduced: all ranks decide alike. Events go to ``<log_dir>/instability_events.jsonl``
    (step, kind, value, threshold, action, detail), TensorBoard text and the counters
    ``instability/events``, ``instability/<kind>``; a summary is printed when fit ends.

    Actions: ``log``; ``skip_step`` (gradient kinds only): no update from this step's gradients;
    ``reduce_lr``: LRs and the schedulers' ``base_lrs`` times ``lr_factor``, floor ``min_lr``;
    ``rollback``: restore model and optimizer (else weights) from the checkpoint callback's last,
    else best, checkpoint, and go on with the next batch and the LR schedule — or stop if there
    is none or after ``max_consecutive_rollbacks`` restores of it; ``stop``: save
    ``<log_dir>/instability-stop-step=<step>.ckpt`` and stop. Gradient kinds that roll back or
    stop also skip their update. More than ``max_consecutive_skips`` skipped steps in a row
    escalate: the weights (unchanged by the skipped steps) are saved like ``stop`` does and
    :class:`InstabilityError` ends the run with a non-zero exit. The summary printed when fit
    ends (or escalates) counts the skipped steps.

    Args:
        actions: kind → ``log``, ``skip_step``, ``reduce_lr``, ``rollback`` or ``stop``; default
            ``log``, but ``skip_step`` for ``nonfinite_grad``.
        grad_z_threshold: :func:`robust_z` of ``grad_norm`` that is a spike; > 0 or None (off).
        loss_z_threshold: robust z-score of the loss that is a spike; > 0 or None.
        spike_window: recent values the spike detectors compare against; >= 2.
        spike_min_history: values needed before spikes are detected; in [2, spike_window].
        window: micro-batches per window of the window kinds; >= 1.
        margin_bound: ``margin_divergence`` beyond this |window mean margin|; > 0 or None.
        margin_growth_windows: ``margin_divergence`` after this many rising windows; or None.
        displacement_nats: ``likelihood_displacement`` when the chosen log-prob window mean
            falls this far below the first window's; > 0 or None.
        collapse_nats: ``rejected_collapse`` (reward hacking): the same for rejected log-probs.
        lr_factor: ``reduce_lr`` multiplier; in (0, 1).
        min_lr: ``reduce_lr`` floor; >= 0.
        max_consecutive_rollbacks: restores of one checkpoint before stopping instead; >= 1.
        max_consecutive_skips: skipped steps in a row before the run fails; >= 1 or None (never).
    """

    def __init__(
        self,
        actions: dict[str, str] | None = None,
        grad_z_threshold: float | None = 8.0,
        loss_z_threshold: float | None = 6.0,
        spike_window: int = 50,
        spike_min_history: int = 10,
        window: int = 20,
        margin_bound: float | None = None,
        margin_growth_windows: int | None = 5,
        displacement_nats: float | None = 20.0,
        collapse_nats: float | None = 50.0,
        lr_factor: float = 0.5,
        min_lr: float = 0.0,
        max_consecutive_rollbacks: int = 3,
        max_consecutive_skips: int | None = 10,
    ) -> None:
        self.actions = {**DEFAULT_ACTIONS, **(actions or {})}
        _check_actions(self.actions)
        thresholds = dict(
            grad_z_threshold=grad_z_threshold,
            loss_z_threshold=loss_z_threshold,
            margin_bound=margin_bound,
            displacement_nats=displacement_nats,
            collapse_nats=collapse_nats,
        )
        for name, value in thresholds.items():
            _check(value is None or value > 0, name, "> 0 or None", value)
        history, growth = spike_min_history, margin_growth_windows
        rollbacks, skips = max_consecutive_rollbacks, max_consecutive_skips
        _check(spike_window >= 2, "spike_window", ">= 2", spike_window)
        _check(2 <= history <= spike_window, "spike_min_history", "in [2, spike_window]", history)
        _check(window >= 1, "window", ">= 1", window)
        _check(growth is None or growth >= 1, "margin_growth_windows", ">= 1 or None", growth)
        _check(0 < lr_factor < 1, "lr_factor", "in (0, 1)", lr_factor)
        _check(min_lr >= 0, "min_lr", ">= 0", min_lr)
        _check(rollbacks >= 1, "max_consecutive_rollbacks", ">= 1", rollbacks)
        _check(skips is None or skips >= 1, "max_consecutive_skips", ">= 1 or None", skips)
        self.max_consecutive_skips = skips
        self.lr_factor, self.min_lr, self.max_consecutive_rollbacks = lr_factor, min_lr, rollbacks
        self.grad_spikes = SpikeDetector(
            NONFINITE_GRAD, GRAD_SPIKE, grad_z_threshold, spike_window, spike_min_history
        )
        self.loss_spikes = SpikeDetector(
            NONFINITE_LOSS, LOSS_SPIKE, loss_z_threshold, spike_window, spike_min_history
        )
        self.average = WindowAverage(window)
        self.windows = WindowDetectors(
            margin_bound=LevelDetector(MARGIN_DIVERGENCE, margin_bound),
            displacement=LevelDetector(LIKELIHOOD_DISPLACEMENT, displacement_nats),
            collapse=LevelDetector(REJECTED_COLLAPSE, collapse_nats),
            growth=MarginGrowthDetector(margin_growth_windows),
        )
        self.state = ActionState()
        self._pending: list[dict[str, Any]] = []  # this batch's events, written at its end
        self._opt_step: int | None = None  # global_step of this batch's optimizer step
        self._log_dir = "."
        self._off: tuple[str, ...] = ()  # kinds the loss gives no meaning to

    # ------------------------------------------------------------------ hooks
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._opt_step = trainer.global_step
        event = self.grad_spikes.update(float(pl_module.grad_norm))  # the same on all ranks
        if event is not None:
            self._detect(trainer, event, optimizer)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (record := step_record(outputs)) is not None:
            self._check_record(trainer, record)
        self._resolve(trainer, pl_module)
        self._opt_step = None
        limit = self.max_consecutive_skips
        if limit is not None and self.state.skip_streak > limit:
            self._escalate(trainer, limit)
        counts = {f"instability/{kind}": float(n) for kind, n in self.state.counts.items()}
        counts["instability/events"] = float(sum(self.state.counts.values()))
        pl_module.log_dict(counts, on_step=True, on_epoch=False, batch_size=1)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_dir = trainer.log_dir  # a collective (broadcast): resolved once, on every rank
        loss = getattr(pl_module, "loss", None)  # any LightningModule may carry this callback
        margin = not isinstance(loss, PreferenceLoss) or loss.capabilities()["optimizes_margin"]
        self._off = () if margin else (MARGIN_DIVERGENCE,)
        os.makedirs(self._log_dir, exist_ok=True)
        if trainer.is_global_zero:  # the log exists (maybe empty) whenever the monitor ran
            open(os.path.join(self._log_dir, EVENT_LOG), "a").close()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank_zero_info(self.summary())

    def summary(self) -> str:
        """One line: the events by kind, the steps skipped, where the event log is."""
        parts = [f"{k} x{n} ({self.actions.get(k, LOG)})" for k, n in self.state.counts.items()]
        where = os.path.join(self._log_dir, EVENT_LOG)
        skipped = f"{self.state.skipped} steps skipped"
        return f"instability: {', '.join(parts) or 'no events'}; {skipped}; event log: {where}"

    # -------------------------------------------------------------- detection
    def _check_record(self, trainer: Trainer, record: StepRecord) -> None:
        """The loss detector on the rank-mean loss; the window detectors on full windows."""
        margin = record.chosen_rewards.mean() - record.rejected_rewards.mean()
        values = [record.loss, margin, record.chosen_logps.mean(), record.rejected_logps.mean()]
        loss, margin, chosen, rejected = rank_mean(torch.stack(values)).tolist()
        event = self.loss_spikes.update(loss)
        if event is not None:
            self._detect(trainer, event)
        if not all(math.isfinite(v) for v in (loss, margin, chosen, rejected)):
            return  # a non-finite batch does not enter the window
        means = self.average.add(margin, chosen, rejected)
        for event in self.windows.update(means) if means is not None else ():
            self._detect(trainer, event)

    def _detect(self, trainer: Trainer, event: Event, optimizer=None) -> None:
        """Take the immediate part of the kind's action; the event is written at batch end."""
        if event.kind in self._off:
            return
        action, detail = self.actions.get(event.kind, LOG), event.detail
        if optimizer is not None and action in DROP_UPDATE:
            skip_step(optimizer)
        if action == REDUCE_LR:
            detail = join(detail, reduce_lr(trainer, self.lr_factor, self.min_lr))
        step = trainer.global_step if self._opt_step is None else self._opt_step  # the batch's
        fields = dict(step=step, kind=event.kind, value=event.value, threshold=event.threshold)
        self._pending.append(fields | {"action": action, "detail": detail})

    # ---------------------------------------------------------------- actions
    def _resolve(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the batch's rollback or stop, then record its events."""
        events, self._pending = self._pending, []
        actions = {event["action"] for event in events}
        if ROLLBACK in actions and STOP not in actions:
            limit, last = self.max_consecutive_rollbacks, self.state.rollback
            restored, detail, self.state.rollback = rollback(trainer, pl_module, last, limit)
            for event in (e for e in events if e["action"] == ROLLBACK):
                event["detail"] = join(event["detail"], detail)
                event["action"] = ROLLBACK if restored else STOP
        stops = [event for event in events if event["action"] == STOP]
        if stops:
            path = save_stop(trainer, self._log_dir, stops[0]["step"])
            trainer.should_stop = True
            for event in stops:
                event["detail"] = join(event["detail"], f"saved {path}")
        for event in events:
            self.state.counts[event["kind"]] = self.state.counts.get(event["kind"], 0) + 1
            write_event(trainer, self._log_dir, event)
        if self._opt_step is not None:  # this batch ended an optimizer step
            skipped = any(event["action"] == SKIP_STEP for event in events)
            self.state.skipped += skipped
            self.state.skip_streak = self.state.skip_streak + 1 if skipped else 0

    def _escalate(self, trainer: Trainer, limit: int) -> None:
        """Save the last good weights (the skipped steps left them alone) and fail the run."""
        step = trainer.global_step
        path = save_stop(trainer, self._log_dir, step)
        rank_zero_info(self.summary())
        raise InstabilityError(
            f"step {step}: {self.state.skip_streak} optimizer steps in a row skipped (more than "
            f"InstabilityMonitor max_consecutive_skips={limit}); the last good weights are in "
            f"{path}; lower --optimizer.init_args.lr or check the data"
        )

    # ------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The detectors' and actions' state, in plain JSON-able values.

        The layout is that of earlier releases (``sums`` is ``[margin, chosen, rejected,
        batches]``, ``start`` ``[chosen, rejected]``, ``rollback`` ``[path, step, repeats]``),
        so their checkpoints resume.
        """
        average, windows, last = self.average, self.windows, self.state.rollback
        start = windows.start
        return {
            "grad_history": list(self.grad_spikes.history),
            "loss_history": list(self.loss_spikes.history),
            "sums": [average.margin, average.chosen, average.rejected, float(average.batches)],
            "start": None if start is None else [start.chosen, start.rejected],
            "last_margin": windows.growth.last_margin,
            "growth": windows.growth.growth,
            "active": [level.kind for level in windows.levels() if level.holding],
            "counts": dict(self.state.counts),
            "rollback": None if last is None else [last.path, last.step, last.repeats],
            "skipped": self.state.skipped,
            "skip_streak": self.state.skip_streak,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict
        self.grad_spikes.history = list(state["grad_history"])
        self.loss_spikes.history = list(state["loss_history"])
        margin, chosen, rejected, batches = state["sums"]
        self.average.margin, self.average.chosen, self.average.rejected = margin, chosen, rejected
        self.average.batches = int(batches)
        start, windows = state["start"], self.windows
        windows.start = None if start is None else LogpStart(*start)
        windows.growth.last_margin, windows.growth.growth = state["last_margin"], state["growth"]
        for level in windows.levels():
            level.holding = level.kind in state["active"]
        last = state["rollback"]
        self.state = ActionState(
            counts=dict(state["counts"]),
            rollback=None if last is None else Rollback(*last),
            skipped=state["skipped"],
            skip_streak=state["skip_streak"],
        )


def _check_actions(actions: dict[str, str]) -> None:
    """Each key a kind, each action one its kind allows (late kinds cannot skip their step)."""
    for kind, action in actions.items():
        _check(kind in KINDS, "actions", f"keyed by kinds {KINDS}", kind)
        allowed = ACTIONS if kind in GRADIENT_KINDS else LATE_ACTIONS
        _check(action in allowed, f"actions[{kind!r}]", f"one of {allowed}", action)


def _check(ok: bool, argument: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"InstabilityMonitor {argument} must be {rule}, got {value!r}")
