"""KTO: Kahneman–Tversky Optimization on unpaired desirable / undesirable responses."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lit_align.collectives import global_sum
from lit_align.losses._common import split_by_label
from lit_align.losses.base import PreferenceLoss, require
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps


class KTO(PreferenceLoss):
    """Kahneman–Tversky Optimization (Ethayarajh et al. 2024, arXiv 2402.01306; TRL
    ``KTOTrainer``).

    With ``ρ = log π − log π_ref`` and the reference point ``z``: desirable rows
    ``λ_D·(1 − σ(β(ρ − z)))``, undesirable rows ``λ_U·(1 − σ(β(z − ρ)))``, averaged over all rows.

    Batch layout (the ``needs_kl_rows`` capability): ``labels`` has length ``N`` and the
    batch ``2N`` rows; rows ``[0, N)`` are the examples, rows ``[N, 2N)`` the same completions
    under mismatched prompts, used only for the KL estimate
    ``z = max(0, mean(ρ on mismatched rows))``, detached and averaged over all ranks when
    ``torch.distributed`` is initialised. ``z`` is a per-micro-batch estimate, so the loss is
    invariant under gradient accumulation only up to that estimate. Metric: ``kto/kl``.

    Args:
        beta: inverse temperature β; > 0.
        desirable_weight: λ_D; > 0. The paper advises ``λ_D·n_D / (λ_U·n_U) ∈ [1, 4/3]``.
        undesirable_weight: λ_U; > 0.
    """

    formula = (
        "desirable λ_D·(1 − σ(β(ρ − z))), undesirable λ_U·(1 − σ(β(z − ρ))), "
        "z = max(0, KL estimate)"
    )
    paper = "Ethayarajh et al. 2024, arXiv 2402.01306"

    needs_kl_rows: ClassVar[bool] = True
    supports_paired = False
    supports_unpaired = True

    def __init__(
        self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
    ) -> None:
        super().__init__()
        require(beta > 0, "beta", f"must be > 0, got {beta}")
        require(desirable_weight > 0, "desirable_weight", f"must be > 0, got {desirable_weight}")
        require(
            undesirable_weight > 0, "undesirable_weight", f"must be > 0, got {undesirable_weight}"
        )
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        labels = batch.labels.bool()  # (N,)
        n = labels.shape[0]
        if policy.sum.shape[0] != 2 * n:
            raise ValueError(
                f"KTO needs 2N rows (N examples, then N mismatched-prompt KL rows) for N labels; "
                f"got {policy.sum.shape[0]} rows and {n} labels"
            )
        rho = policy.sum - reference.sum  # (2N,)
        rho, kl = rho[:n], self.kl_estimate(rho[n:])
        sign = labels.to(rho.dtype) * 2 - 1  # (N,) +1 desirable, −1 undesirable
        weight = torch.where(labels, self.desirable_weight, self.undesirable_weight).to(rho.dtype)
        loss = (weight * (1 - torch.sigmoid(sign * self.beta * (rho - kl)))).mean()
        chosen, rejected = split_by_label(self.beta * rho.detach(), labels)
        return LossOutput(loss, chosen, rejected, metrics={"kto/kl": kl})

    @staticmethod
    def kl_estimate(rho_kl: Tensor) -> Tensor:
        """``max(0, mean(ρ))`` over the mismatched rows of every rank, detached (scalar)."""
        stats = torch.stack([rho_kl.sum(), rho_kl.new_tensor(rho_kl.numel())])
        total, count = global_sum(stats).unbind()
        return (total / count).clamp(min=0)
