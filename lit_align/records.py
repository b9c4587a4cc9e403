"""The detached record of a step and the standard metrics the module logs from it."""

from __future__ import annotations

from torch import Tensor

from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps, StepRecord


def split_rows(values: Tensor, batch: PreferenceBatch) -> tuple[Tensor, Tensor]:
    """(chosen, rejected) parts of a per-row tensor, for paired or unpaired batches."""
    if batch.paired:
        half = values.shape[0] // 2
        return values[:half], values[half:]
    labels = batch.labels
    rows = values[: labels.shape[0]]  # unpaired batches may append extra (KL) rows
    return rows[labels], rows[~labels]


def make_record(
    out: LossOutput, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
) -> StepRecord:
    """The detached :class:`~lit_align.types.StepRecord` of a step, for logging and callbacks."""
    chosen, rejected = split_rows(policy.sum.detach(), batch)
    margins = None
    if reference is not None and batch.paired:
        rho_w, rho_l = split_rows(policy.sum.detach() - reference.sum, batch)
        margins = rho_w - rho_l  # (B,) Δ in nats, whatever the loss's β
    return StepRecord(
        loss=out.loss.detach(),
        chosen_rewards=out.chosen_rewards.detach(),
        rejected_rewards=out.rejected_rewards.detach(),
        chosen_logps=chosen,
        rejected_logps=rejected,
        target_margin=out.target_margin,
        log_ratio_margins=margins,
        metrics={k: v.detach() for k, v in out.metrics.items()},
    )


def reward_metrics(record: StepRecord) -> dict[str, Tensor]:
    """The standard reward, log-prob and margin metrics (0-dim tensors) of a record."""
    chosen, rejected = record.chosen_rewards, record.rejected_rewards
    metrics = {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "logps/chosen": record.chosen_logps.mean(),
        "logps/rejected": record.rejected_logps.mean(),
    }
    if chosen.shape == rejected.shape:
        metrics["rewards/margins"] = (chosen - rejected).mean()
        metrics["rewards/accuracies"] = (chosen > rejected).float().mean()
    if record.log_ratio_margins is not None:
        metrics["logratios/margins"] = record.log_ratio_margins.mean()
    return metrics
