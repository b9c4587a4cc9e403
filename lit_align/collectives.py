"""The one home of ``torch.distributed`` questions and the small collectives built on them.

Every other module asks :func:`is_distributed` (the only ``dist.is_initialized()`` check) or calls
the helpers below, which are no-ops in a single process. The collectives must be called by every
rank in the same order.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """``(num_replicas, rank)`` from ``torch.distributed``, or ``(1, 0)`` when not initialised."""
    if is_distributed():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return world()[1]


def global_sum(x: Tensor) -> Tensor:
    """``x`` (detached) summed over ranks when ``torch.distributed`` is initialised, else ``x``."""
    x = x.detach().clone()
    if is_distributed():
        dist.all_reduce(x)
    return x


def rank_mean(values: Tensor) -> Tensor:
    """``values`` (detached, float) averaged over ranks when ``torch.distributed`` is initialised.

    A collective: every rank must call it on the same batch. Non-finite values propagate, so every
    rank sees a NaN that any rank saw.
    """
    x = global_sum(values.float())
    return x / world()[0] if is_distributed() else x


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    if is_distributed():
        dist.barrier()


def destroy_process_group() -> None:
    """Tear down the process group if one is initialised (safe to call twice)."""
    if is_distributed():
        dist.destroy_process_group()
