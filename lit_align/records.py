"""The detached record of a step and the standard metrics the module logs from it.

Metric meaning, as in TRL (so dashboards of the two tools compare), for every loss:

* ``rewards/chosen``, ``rewards/rejected``: mean implicit reward ``β·ρ`` of the chosen and
  rejected responses, ``ρ = log π − log π_ref`` summed over the response tokens (``β·log π``
  without a reference), β the loss's ``reward_beta``;
* ``rewards/margins``: paired data, the mean over pairs of chosen minus rejected reward;
  unpaired data, the mean reward of the desirable rows minus that of the undesirable rows (no
  pairing is invented between unrelated rows);
* ``rewards/accuracies``: paired data only, the fraction of pairs whose chosen reward is higher;
* ``logps/chosen``, ``logps/rejected``: mean summed policy log-probs;
* ``logratios/margins``: mean ``Δ = ρ_w − ρ_l`` in nats (no β), paired data with a reference.

A loss whose own rewards are on another scale (per-token means, an f-divergence score, SimPO's
``β·c̄``) also logs them as ``<namespace>/rewards/chosen|rejected|margins|accuracies``.
"""

from __future__ import annotations

from torch import Tensor

from lit_align.losses.base import PreferenceLoss
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
    out: LossOutput,
    policy: SequenceLogps,
    reference: SequenceLogps | None,
    batch: PreferenceBatch,
    loss: PreferenceLoss,
) -> StepRecord:
    """The detached :class:`~lit_align.types.StepRecord` of a step, for logging and callbacks.

    Its rewards are the standard ``β·ρ`` on summed log-ratios (module docstring); the loss's own
    rewards go into ``metrics`` under ``loss.reward_namespace`` when it has one.
    """
    logps = policy.sum.detach()  # (N,)
    rho = logps if reference is None else logps - reference.sum  # (N,)
    chosen, rejected = split_rows(logps, batch)
    rewards_w, rewards_l = split_rows(loss.reward_beta * rho, batch)
    margins = None
    if reference is not None and batch.paired:
        rho_w, rho_l = split_rows(rho, batch)
        margins = rho_w - rho_l  # (B,) Δ in nats, whatever the loss's β
    metrics = {k: v.detach() for k, v in out.metrics.items()}
    if loss.reward_namespace is not None:
        own = _reward_stats(
            out.chosen_rewards.detach(), out.rejected_rewards.detach(), batch.paired
        )
        metrics.update({f"{loss.reward_namespace}/{k}": v for k, v in own.items()})
    return StepRecord(
        loss=out.loss.detach(),
        chosen_rewards=rewards_w,
        rejected_rewards=rewards_l,
        chosen_logps=chosen,
        rejected_logps=rejected,
        target_margin=out.target_margin,
        log_ratio_margins=margins,
        metrics=metrics,
        paired=batch.paired,
    )


def _reward_stats(chosen: Tensor, rejected: Tensor, paired: bool) -> dict[str, Tensor]:
    """``rewards/*`` of the module docstring; an empty side is left out."""
    stats = {}
    if chosen.numel():
        stats["rewards/chosen"] = chosen.mean()
    if rejected.numel():
        stats["rewards/rejected"] = rejected.mean()
    if paired:
        stats["rewards/margins"] = (chosen - rejected).mean()
        stats["rewards/accuracies"] = (chosen > rejected).float().mean()
    elif chosen.numel() and rejected.numel():
        stats["rewards/margins"] = chosen.mean() - rejected.mean()
    return stats


def reward_metrics(record: StepRecord) -> dict[str, Tensor]:
    """The standard reward, log-prob and margin metrics (0-dim tensors) of a record."""
    metrics = _reward_stats(record.chosen_rewards, record.rejected_rewards, record.paired)
    if record.chosen_logps.numel():
        metrics["logps/chosen"] = record.chosen_logps.mean()
    if record.rejected_logps.numel():
        metrics["logps/rejected"] = record.rejected_logps.mean()
    if record.log_ratio_margins is not None:
        metrics["logratios/margins"] = record.log_ratio_margins.mean()
    return metrics
