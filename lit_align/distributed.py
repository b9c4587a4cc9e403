"""Distributed helpers that are correct with and without FSDP2 sharding."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def global_grad_norm(parameters: Iterable[torch.nn.Parameter]) -> Tensor:
    """The L2 norm of all gradients, as if unsharded; a collective under FSDP2.

    Sharded (``DTensor``) gradients give a partial norm per rank; ``full_tensor()`` reduces it,
    so every rank must call this on the same step. Lightning's ``grad_norm`` utility crashes on
    such gradients, and local shard norms would be wrong.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
