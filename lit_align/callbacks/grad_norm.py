"""GradNormMonitor: gradient norms per parameter group (embeddings, each block, head)."""

from __future__ import annotations

import re

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from lit_align.callbacks.readers import tensorboard

# Decoder blocks: ``layers.<i>`` (Llama, Qwen, Mistral), ``h.<i>`` (GPT-2), ``blocks.<i>``; all are
# reported as ``layers.<i>``.
_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def group_of(name: str) -> str:
    """The group of a parameter name: ``layers.<i>``, ``embeddings`` or ``head``.

    ``head`` holds everything after the blocks that is not an embedding: the final norm and the
    ``lm_head`` (absent as a separate parameter when tied to the embeddings).
    """
    block = _BLOCK.search(name)
    if block is not None:
        return f"layers.{block.group(1)}"
    return "embeddings" if "embed" in name else "head"


def parameter_norms(module: nn.Module) -> tuple[list[str], Tensor]:
    """Names and ``(P,)`` float32 L2 norms of the gradients of ``module``'s parameters.

    Parameters without a gradient are left out. Under FSDP2 a gradient is a sharded ``DTensor``
    whose local norm is partial; ``full_tensor()`` reduces it over ranks, so this is a collective
    that every rank must run on the same step (the parameter order is the same on every rank).
    """
    names, norms = [], []
    for name, param in module.named_parameters():
        if param.grad is None:
            continue
        norm = torch.linalg.vector_norm(param.grad, 2, dtype=torch.float32)
        names.append(name)
        norms.append(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if not norms:
        return [], torch.zeros(0)
    return names, torch.stack(norms)


def group_norms(names: list[str], norms: Tensor) -> dict[str, Tensor]:
    """L2 norm per group (see :func:`group_of`): ``sqrt`` of the group's summed squared norms.

    The squares of the group norms sum to the square of the global norm.
    """
    groups = [group_of(name) for name in names]
    keys = list(dict.fromkeys(groups))  # first-seen order: embeddings, layers.0, …, head
    index = torch.tensor([keys.index(g) for g in groups], device=norms.device)
    squares = torch.zeros(len(keys), device=norms.device).index_add_(0, index, norms.square())
    return dict(zip(keys, squares.sqrt()))


class GradNormMonitor(Callback):
    """Logs pre-clip gradient norms per group of ``pl_module.policy`` parameters.

    The module already logs the global norm ``grad_norm`` every step. Every
    ``group_every_n_steps`` optimizer steps this callback adds ``grad_norm/<group>`` for the
    groups ``embeddings``, ``layers.<i>`` (each decoder block) and ``head`` (final norm and
    ``lm_head``), computed in ``on_before_optimizer_step`` (gradients complete, not yet clipped)
    and written to every logger at ``trainer.global_step``. With ``histograms`` it also writes the
    per-parameter norms as the TensorBoard histogram ``grad_norm/parameters``. Correct under FSDP2
    (see :func:`parameter_norms`); the cost is one small all-reduce per parameter on those steps.
    The last computed group norms are kept in :attr:`last_norms`.

    Args:
        group_every_n_steps: optimizer steps between two computations; >= 1.
        histograms: also write per-parameter norm histograms (needs a TensorBoard logger).
    """

    def __init__(self, group_every_n_steps: int = 50, histograms: bool = False) -> None:
        if group_every_n_steps < 1:
            raise ValueError(
                f"GradNormMonitor group_every_n_steps must be >= 1, got {group_every_n_steps}"
            )
        self.group_every_n_steps = group_every_n_steps
        self.histograms = histograms
        self.last_norms: dict[str, float] = {}

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if trainer.global_step % self.group_every_n_steps:
            return
        names, norms = parameter_norms(pl_module.policy)  # (P,)
        groups = group_norms(names, norms)
        self.last_norms = {group: float(norm) for group, norm in groups.items()}
        metrics = {f"grad_norm/{group}": norm for group, norm in self.last_norms.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        writer = tensorboard(trainer) if self.histograms else None
        finite = norms[torch.isfinite(norms)].cpu()  # a histogram of NaN cannot be written
        if writer is not None and finite.numel():
            writer.add_histogram("grad_norm/parameters", finite, trainer.global_step)
