"""Non-finite weights are refused: when loaded, and before a checkpoint or an export is written.

A bit-rotted weight file (bytes 0xFF read as float are NaN) or a diverged run (learning rate far
too high) gives weights that train and export to garbage without any error. Every check here
names the tensor, so the run fails at once, non-zero, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


class NonFiniteWeightsError(ValueError):
    """Model weights hold NaN or infinity."""


def nonfinite(named: Iterable[tuple[str, Tensor]]) -> list[str]:
    """Names of the tensors holding NaN or ±inf, with the count (this rank's shards only)."""
    found = []
    for name, tensor in named:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # DTensor shard
        if local.is_floating_point() and local.device.type != "meta":
            bad = int((~torch.isfinite(local.detach())).sum())
            if bad:
                found.append(f"{name} ({bad} of {local.numel()} values)")
    return found


def require_finite(model: nn.Module, what: str, hint: str) -> None:
    """Raise :class:`NonFiniteWeightsError` naming ``what`` and the tensors; local, no collective.

    Args:
        model: whose parameters and buffers to check.
        what: where the weights come from or go to, e.g. ``"--model.policy.pretrained x"``.
        hint: what to do about it.
    """
    bad = nonfinite([*model.named_parameters(), *model.named_buffers()])
    if bad:
        raise NonFiniteWeightsError(f"{what}: non-finite weights in {describe(bad)}; {hint}")


def describe(names: list[str], limit: int = 3) -> str:
    """The first ``limit`` names, and how many more."""
    more = f" and {len(names) - limit} more tensors" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def require_finite_on_all_ranks(model: nn.Module, what: str, hint: str, strategy) -> None:
    """:func:`require_finite` as a collective: every rank raises if any rank's shards are bad.

    Args:
        strategy: the trainer's strategy (``reduce`` sums the counts over ranks).
    """
    bad = nonfinite([*model.named_parameters(), *model.named_buffers()])
    count = torch.tensor(float(len(bad)), device=strategy.root_device)
    total = strategy.reduce(count, reduce_op="sum")
    if float(total) > 0:
        where = describe(bad) if bad else "tensors sharded to other ranks"
        raise NonFiniteWeightsError(f"{what}: non-finite weights in {where}; {hint}")
