"""Small helpers several losses share (private to :mod:`lit_align.losses`).

:func:`linear_below` keeps an exponential finite far below its working range,
:func:`split_by_label` splits an unpaired batch's values, :class:`RunningMean` is a checkpointed
mean kept equal on every rank (BCO's reward baseline, SPO's score scale).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_align.collectives import global_sum


def linear_below(fn: Callable[[Tensor], tuple[Tensor, Tensor]], x: Tensor, x_min: float) -> Tensor:
    """``fn(x)`` for ``x ≥ x_min`` and its tangent line at ``x_min`` below.

    Keeps exponentials from overflowing while the value and gradient stay finite and continuous.

    Args:
        fn: maps a tensor to ``(value, derivative)`` of the function there.
        x: input, any shape.
        x_min: where the tangent line takes over.

    Returns:
        A tensor shaped like ``x``.
    """
    x_c = x.clamp(min=x_min)
    value, slope = fn(x_c)
    # (x − x_c) is 0 with zero gradient above x_min, so only the tangent term acts below it.
    return value + (x - x_c) * slope


def split_by_label(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The desirable and undesirable entries of the ``(N,)`` tensor ``x`` (unpaired layout)."""
    labels = labels.bool()
    return x[labels], x[~labels]


class RunningMean(nn.Module):
    """Running mean of every value folded in during training, kept in buffers (checkpointed).

    ``update`` folds a micro-batch's values into the mean, summed over ranks when
    ``torch.distributed`` is initialised, so all ranks hold the same mean (BCO's reward baseline
    δ, SPO's score scale). The mean is 0 until a value has been seen. The count is an integer
    buffer (a low-precision cast of the module leaves it exact); the mean is combined in float64.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def update(self, values: Tensor) -> None:
        """Fold the (detached) values of any shape into the running mean."""
        stats = torch.stack([values.detach().sum(), values.new_tensor(values.numel())])
        total, n = global_sum(stats.double()).unbind()
        count = self.count + n
        self.mean.copy_((self.mean.double() * self.count + total) / count.clamp(min=1))
        self.count.copy_(count)
