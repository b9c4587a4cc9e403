"""Per-run statistics read back from a run's TensorBoard event files and event log."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REQUIRED = (
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "grad_norm",
    "val_rewards/accuracies",
)
EVENT_LOG = "instability_events.jsonl"


def read_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a run as ``tag → [(step, value), ...]``."""
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def count_events(run_dir: str) -> int | None:
    """Instability events recorded in the run's event log; None when no monitor was enabled."""
    path = os.path.join(run_dir, EVENT_LOG)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return sum(1 for line in f if line.strip() and json.loads(line))


@dataclass(frozen=True)
class RunStats:
    """Summary of one training run.

    Attributes:
        val_reward_accuracy: last training-time validation ``val_rewards/accuracies`` (the
            validation split of the training data; the report's held-out reward accuracy is
            measured separately on the evaluation data).
        margin_final: mean reward margin (β·Δ, the loss's own scale) over the last tenth of
            the steps.
        margin_max: largest logged per-step reward margin.
        logratio_final: mean log-ratio margin Δ in nats (comparable across losses) over the
            last tenth of the steps; None for reference-free losses.
        logratio_max: largest logged per-step Δ; None for reference-free losses.
        target_final: the loss's finite target (SPO's ``spo/target_gap_mean``) at the end, or
            None for losses without one.
        chosen_drift: change of the chosen log-prob from the first step to the last tenth.
        rejected_drift: the same for the rejected log-prob.
        grad_norm_mean: mean pre-clip gradient norm.
        grad_norm_max: largest pre-clip gradient norm.
        events: instability events, or None if no monitor ran.
    """

    val_reward_accuracy: float
    margin_final: float
    margin_max: float
    logratio_final: float | None
    logratio_max: float | None
    target_final: float | None
    chosen_drift: float
    rejected_drift: float
    grad_norm_mean: float
    grad_norm_max: float
    events: int | None


def _tail_mean(series: list[tuple[int, float]]) -> float:
    tail = series[-max(len(series) // 10, 1) :]
    return sum(v for _, v in tail) / len(tail)


def run_stats(run_dir: str) -> RunStats:
    """Statistics of the run logged in ``run_dir`` (it must have logged every curve)."""
    s = read_scalars(run_dir)
    missing = [tag for tag in REQUIRED if not s.get(tag)]
    if missing:
        raise ValueError(f"run {run_dir!r} logged no {missing}; was it trained with lit_align?")
    norms = [v for _, v in s["grad_norm"]]
    target = s.get("spo/target_gap_mean")
    logratio = s.get("logratios/margins")
    return RunStats(
        val_reward_accuracy=s["val_rewards/accuracies"][-1][1],
        margin_final=_tail_mean(s["rewards/margins"]),
        margin_max=max(v for _, v in s["rewards/margins"]),
        logratio_final=_tail_mean(logratio) if logratio else None,
        logratio_max=max(v for _, v in logratio) if logratio else None,
        target_final=_tail_mean(target) if target else None,
        chosen_drift=_tail_mean(s["logps/chosen"]) - s["logps/chosen"][0][1],
        rejected_drift=_tail_mean(s["logps/rejected"]) - s["logps/rejected"][0][1],
        grad_norm_mean=sum(norms) / len(norms),
        grad_norm_max=max(norms),
        events=count_events(run_dir),
    )
