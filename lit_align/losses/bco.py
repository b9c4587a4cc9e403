"""Binary Classifier Optimization: unpaired BCO and paired BCO, with a running reward baseline."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_align.losses._common import RunningMean, split_by_label
from lit_align.losses.base import PreferenceLoss, require
from lit_align.losses.margin import MarginLoss, PairInputs, PairTerms
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps


class BCOPair(MarginLoss):
    """BCO on pairs (Jung et al. 2024, arXiv 2404.04656; TRL ``bco_pair``).

    ``ℓ = −logσ(βρ_w − δ) − logσ(−(βρ_l − δ))``: chosen and rejected rewards classified against
    the baseline δ, the running mean of all rewards seen in training (``chosen`` and ``rejected``
    alike, every rank). In training mode each micro-batch first updates δ and then uses it, so
    the loss depends on the micro-batch order and split (not exactly invariant under gradient
    accumulation); in eval mode δ is frozen. δ lives in the ``baseline`` buffers and so is saved
    in and restored from checkpoints. Metric: ``bco/delta``.

    Args:
        beta: inverse temperature β; > 0.
        **modifiers: the modifiers of :class:`~lit_align.losses.margin.MarginLoss`.
    """

    formula = "−logσ(βρ_w − δ) − logσ(−(βρ_l − δ)), δ = running mean of rewards"
    paper = "Jung et al. 2024, arXiv 2404.04656"

    def __init__(self, beta: float = 0.1, **modifiers: Any) -> None:
        super().__init__(beta, **modifiers)
        self.baseline = RunningMean()

    def pair_loss(self, rho_w: Tensor, rho_l: Tensor, inputs: PairInputs) -> PairTerms:
        x_w, x_l = self.beta * rho_w, self.beta * rho_l  # (B,) each
        if self.training:
            self.baseline.update(torch.cat([x_w, x_l]))
        delta = self.baseline.mean.to(x_w.dtype)
        losses = -F.logsigmoid(x_w - delta) - F.logsigmoid(-(x_l - delta))
        return PairTerms(losses, metrics={"bco/delta": delta.detach().clone()})


class BCO(PreferenceLoss):
    """Binary Classifier Optimization on unpaired data (Jung et al. 2024, arXiv 2404.04656;
    TRL ``BCOTrainer`` without its optional density-ratio (UDM) weighting).

    Rewards ``x = β·ρ``; desirable rows ``−logσ(x − δ)``, undesirable rows ``−logσ(−(x − δ))``,
    averaged over all rows. δ is the running mean of rewards as in :class:`BCOPair` (updated in
    training mode before use, all-reduced across ranks, saved in checkpoints). Metric:
    ``bco/delta``.

    Args:
        beta: inverse temperature β; > 0.
    """

    formula = "desirable −logσ(βρ − δ), undesirable −logσ(−(βρ − δ)), δ = running mean of rewards"
    paper = "Jung et al. 2024, arXiv 2404.04656"

    supports_paired = False
    supports_unpaired = True

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        require(beta > 0, "beta", f"must be > 0, got {beta}")
        self.beta = beta
        self.baseline = RunningMean()

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        rewards = self.beta * (policy.sum - reference.sum)  # (N,)
        if self.training:
            self.baseline.update(rewards)
        delta = self.baseline.mean.to(rewards.dtype)
        sign = batch.labels.to(rewards.dtype) * 2 - 1  # (N,) +1 desirable, −1 undesirable
        loss = -F.logsigmoid(sign * (rewards - delta)).mean()
        chosen, rejected = split_by_label(rewards.detach(), batch.labels)
        return LossOutput(loss, chosen, rejected, metrics={"bco/delta": delta.detach().clone()})
