"""InstabilityMonitor: sees training go wrong, records it, and skips, slows, rolls back or stops."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_align.callbacks.readers import step_record, tensorboard
from lit_align.collectives import rank_mean
from lit_align.losses.base import PreferenceLoss
from lit_align.types import StepRecord

GRADIENT_KINDS = ("nonfinite_grad", "grad_spike")  # detected before the optimizer step
WINDOW_KINDS = ("margin_divergence", "likelihood_displacement", "rejected_collapse")
KINDS = (*GRADIENT_KINDS, "nonfinite_loss", "loss_spike", *WINDOW_KINDS)
ACTIONS = ("log", "skip_step", "reduce_lr", "rollback", "stop")
LATE_ACTIONS = ("log", "reduce_lr", "rollback", "stop")  # kinds seen after the update can't skip
DEFAULT_ACTIONS = {"nonfinite_grad": "skip_step"}  # a NaN update would ruin every weight
EVENT_LOG = "instability_events.jsonl"  # in the run directory


def robust_z(value: float, history: Sequence[float]) -> float:
    """``(value − median) / (1.4826·MAD)`` over ``history``; the scale is floored at 1% of
    ``|median|`` (and 1e-12) so that a flat history does not make every change significant."""
    median = statistics.median(history)
    mad = statistics.median(abs(h - median) for h in history)
    return (value - median) / max(1.4826 * mad, 0.01 * abs(median), 1e-12)


@dataclass
class _State:
    """Everything the detectors remember; saved in checkpoints."""

    grad_history: list[float] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)
    sums: list[float] = field(default_factory=lambda: [0.0] * 4)  # margin, chosen, rejected, n
    start: list[float] | None = None  # first window's chosen and rejected log-prob means
    last_margin: float | None = None
    growth: int = 0  # consecutive windows whose mean margin rose
    active: list[str] = field(default_factory=list)  # window conditions holding now
    counts: dict[str, int] = field(default_factory=dict)
    rollback: list | None = None  # [path, global_step, restores in a row] of the last rollback
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
        thresholds = dict(
            grad_z_threshold=grad_z_threshold,
            loss_z_threshold=loss_z_threshold,
            margin_bound=margin_bound,
            displacement_nats=displacement_nats,
            collapse_nats=collapse_nats,
        )
        for name, value in thresholds.items():
            _check(value is None or value > 0, name, "> 0 or None", value)
        self.thresholds = dict(zip(("grad", "loss", *WINDOW_KINDS), thresholds.values()))
        history, growth = spike_min_history, margin_growth_windows
        rollbacks = max_consecutive_rollbacks
        _check(spike_window >= 2, "spike_window", ">= 2", spike_window)
        _check(2 <= history <= spike_window, "spike_min_history", "in [2, spike_window]", history)
        _check(window >= 1, "window", ">= 1", window)
        _check(growth is None or growth >= 1, "margin_growth_windows", ">= 1 or None", growth)
        _check(0 < lr_factor < 1, "lr_factor", "in (0, 1)", lr_factor)
        _check(min_lr >= 0, "min_lr", ">= 0", min_lr)
        _check(rollbacks >= 1, "max_consecutive_rollbacks", ">= 1", rollbacks)
        skips = max_consecutive_skips
        _check(skips is None or skips >= 1, "max_consecutive_skips", ">= 1 or None", skips)
        self.max_consecutive_skips = skips
        for kind, action in self.actions.items():
            _check(kind in KINDS, "actions", f"keyed by kinds {KINDS}", kind)
            allowed = ACTIONS if kind in GRADIENT_KINDS else LATE_ACTIONS
            _check(action in allowed, f"actions[{kind!r}]", f"one of {allowed}", action)
        self.spike_window, self.spike_min_history = spike_window, spike_min_history
        self.window, self.margin_growth_windows = window, margin_growth_windows
        self.lr_factor, self.min_lr, self.max_consecutive_rollbacks = lr_factor, min_lr, rollbacks
        self.state = _State()
        self._pending: list[dict[str, Any]] = []  # this batch's events, written at its end
        self._opt_step: int | None = None  # global_step of this batch's optimizer step
        self._log_dir = "."
        self._off: tuple[str, ...] = ()  # kinds the loss gives no meaning to

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._opt_step = trainer.global_step
        self._scalar(trainer, "grad", float(pl_module.grad_norm), optimizer)  # same on all ranks

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
        self._off = () if margin else ("margin_divergence",)
        os.makedirs(self._log_dir, exist_ok=True)
        if trainer.is_global_zero:  # the log exists (maybe empty) whenever the monitor ran
            open(os.path.join(self._log_dir, EVENT_LOG), "a").close()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank_zero_info(self.summary())

    def summary(self) -> str:
        """One line: the events by kind, the steps skipped, where the event log is."""
        parts = [f"{k} x{n} ({self.actions.get(k, 'log')})" for k, n in self.state.counts.items()]
        where = os.path.join(self._log_dir, EVENT_LOG)
        skipped = f"{self.state.skipped} steps skipped"
        return f"instability: {', '.join(parts) or 'no events'}; {skipped}; event log: {where}"

    def _escalate(self, trainer: Trainer, limit: int) -> None:
        """Save the last good weights (the skipped steps left them alone) and fail the run."""
        step = trainer.global_step
        path = self._save_stop(trainer, step)
        rank_zero_info(self.summary())
        raise InstabilityError(
            f"step {step}: {self.state.skip_streak} optimizer steps in a row skipped (more than "
            f"InstabilityMonitor max_consecutive_skips={limit}); the last good weights are in "
            f"{path}; lower --optimizer.init_args.lr or check the data"
        )

    def _save_stop(self, trainer: Trainer, step: int) -> str:
        """Save ``instability-stop-step=<step>.ckpt`` (a collective) and return its path."""
        path = os.path.join(self._log_dir, f"instability-stop-step={step}.ckpt")
        trainer.save_checkpoint(path)  # every rank took the same decision
        return path

    def _check_record(self, trainer: Trainer, record: StepRecord) -> None:
        margin = record.chosen_rewards.mean() - record.rejected_rewards.mean()
        values = [record.loss, margin, record.chosen_logps.mean(), record.rejected_logps.mean()]
        loss, *levels = rank_mean(torch.stack(values)).tolist()
        sums = self.state.sums
        if self._scalar(trainer, "loss", loss) and all(math.isfinite(v) for v in levels):
            sums[:] = [s + v for s, v in zip(sums, [*levels, 1.0])]
        if sums[-1] >= self.window:
            self._check_window(trainer, *(s / sums[-1] for s in sums[:-1]))
            sums[:] = [0.0] * 4

    def _scalar(self, trainer, name: str, value: float, optimizer=None) -> bool:
        """Detect ``nonfinite_<name>`` or ``<name>_spike`` (valued by its robust z-score)."""
        if not math.isfinite(value):
            self._detect(trainer, f"nonfinite_{name}", value, None, optimizer)
            return False
        history, threshold = getattr(self.state, f"{name}_history"), self.thresholds[name]
        if threshold is not None and len(history) >= self.spike_min_history:
            if (z := robust_z(value, history)) > threshold:
                median = statistics.median(history)
                detail = f"value {value:.4g}; median of the last {len(history)}: {median:.4g}"
                self._detect(trainer, f"{name}_spike", z, threshold, optimizer, detail)
        history[:] = [*history, value][-self.spike_window :]
        return True

    def _check_window(self, trainer: Trainer, margin: float, chosen: float, rejected: float):
        """Window detectors, on the window means of the margin and chosen/rejected log-probs."""
        state = self.state
        state.start = state.start or [chosen, rejected]
        falls = (state.start[0] - chosen, state.start[1] - rejected)  # log-probs since start
        detail = f"window means: margin {margin:.4g}, chosen {chosen:.4g}, rejected {rejected:.4g}"
        for kind, value in zip(WINDOW_KINDS, (abs(margin), *falls)):
            threshold = self.thresholds[kind]
            if threshold is None or value <= threshold:
                state.active = [k for k in state.active if k != kind]  # re-armed
            elif kind not in state.active:
                state.active.append(kind)
                self._detect(trainer, kind, value, threshold, detail=detail)
        rising = state.last_margin is not None and margin > state.last_margin
        state.growth, state.last_margin = (state.growth + 1 if rising else 0), margin
        if (n := self.margin_growth_windows) is not None and state.growth >= n:
            self._detect(trainer, "margin_divergence", state.growth, n, detail=f"rising; {detail}")
            state.growth = 0

    def _detect(self, trainer, kind, value, threshold, optimizer=None, detail: str = "") -> None:
        """Take the immediate part of the kind's action; the event is written at batch end."""
        if kind in self._off:
            return
        action = self.actions.get(kind, "log")
        if optimizer is not None and action in ("skip_step", "rollback", "stop"):
            optimizer.zero_grad(set_to_none=True)  # parameters without grads are not updated
        if action == "reduce_lr":
            detail = _join(detail, self._reduce_lr(trainer))
        step = trainer.global_step if self._opt_step is None else self._opt_step  # the batch's
        event = dict(step=step, kind=kind, value=value, threshold=threshold, action=action)
        self._pending.append(event | {"detail": detail})

    def _reduce_lr(self, trainer: Trainer) -> str:
        factor, floor = self.lr_factor, self.min_lr
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] * factor, floor)
        for config in trainer.lr_scheduler_configs:  # else the next scheduler step restores it
            if hasattr(scheduler := config.scheduler, "base_lrs"):
                scheduler.base_lrs = [max(lr * factor, floor) for lr in scheduler.base_lrs]
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        return f"lr now {', '.join(f'{lr:.4g}' for lr in lrs)}"

    def _resolve(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Run the batch's rollback or stop, then record its events."""
        events, self._pending = self._pending, []
        actions = {event["action"] for event in events}
        if "rollback" in actions and "stop" not in actions:
            restored, detail = self._rollback(trainer, pl_module)
            for event in (e for e in events if e["action"] == "rollback"):
                event["detail"] = _join(event["detail"], detail)
                event["action"] = "rollback" if restored else "stop"
        stops = [event for event in events if event["action"] == "stop"]
        if stops:
            path = self._save_stop(trainer, stops[0]["step"])
            trainer.should_stop = True
            for event in stops:
                event["detail"] = _join(event["detail"], f"saved {path}")
        for event in events:
            self.state.counts[event["kind"]] = self.state.counts.get(event["kind"], 0) + 1
            self._write(trainer, event)
        if self._opt_step is not None:  # this batch ended an optimizer step
            skipped = any(event["action"] == "skip_step" for event in events)
            self.state.skipped += skipped
            self.state.skip_streak = self.state.skip_streak + 1 if skipped else 0

    def _rollback(self, trainer: Trainer, pl_module: LightningModule) -> tuple[bool, str]:
        """Restore the last checkpoint; False if there is none or it was restored too often."""
        ckpt = trainer.checkpoint_callback
        path = (ckpt.last_model_path or ckpt.best_model_path) if ckpt is not None else ""
        if not path:
            return False, "no checkpoint to roll back to"
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
        source, last = [str(path), checkpoint.get("global_step")], self.state.rollback
        repeats = last[2] + 1 if last is not None and last[:2] == source else 1
        self.state.rollback = [*source, repeats]
        detail = f"restored the step-{source[1]} checkpoint {path}: {restored}"
        if repeats > self.max_consecutive_rollbacks:
            return False, f"{detail}, {repeats} times in a row"
        return True, detail

    def _write(self, trainer: Trainer, event: dict[str, Any]) -> None:
        value = float(event["value"])  # NaN and inf are written as strings: JSON has neither
        line = json.dumps(event | {"value": value if math.isfinite(value) else str(value)})
        if not trainer.is_global_zero:
            return
        with open(os.path.join(self._log_dir, EVENT_LOG), "a") as log:
            log.write(line + "\n")
        writer = tensorboard(trainer)
        if writer is not None:
            writer.add_text("instability/events", line, event["step"])
        _announce(trainer, event)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.state = _State(**state_dict)


def _check(ok: bool, argument: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"InstabilityMonitor {argument} must be {rule}, got {value!r}")


def _announce(trainer: Trainer, event: dict[str, Any]) -> None:
    """One readable console line: ``instability at step 120: grad_spike 9.1 > 8 (log); ...``."""
    value, threshold = event["value"], event["threshold"]
    bound = f" > {threshold:.4g}" if threshold is not None else ""
    text = f"instability at step {event['step']}: {event['kind']} {float(value):.4g}{bound}"
    line = _join(f"{text} ({event['action']})", event["detail"])
    bar = getattr(trainer, "progress_bar_callback", None)
    bar.print(line) if bar is not None else rank_zero_info(line)


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)
