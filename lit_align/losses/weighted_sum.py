"""WeightedSum: a loss made of weighted component losses (e.g. RPO = DPO + α·SFT)."""

from __future__ import annotations

from collections import Counter

from torch import nn

from lit_align.losses.base import CAPABILITIES, PreferenceLoss, require
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps

_SUPPORTS = ("supports_paired", "supports_unpaired")
"""Flags a sum has only if every component has them; it has the others if any component does."""


class WeightedSum(PreferenceLoss):
    """``ℓ = Σ_i w_i·ℓ_i`` over component losses (TRL's ``loss_type=[...]``, ``loss_weights``).

    Capabilities are per instance (the module must read them from the loss object, not its
    class, through ``capabilities()``): it needs what any component needs (every flag of
    :data:`~lit_align.losses.base.CAPABILITIES` but the two ``supports_*``) and supports a layout
    only if every component does. Rewards and ``target_margin`` come from the first component;
    metrics merge the components' metrics and add each component's loss as
    ``loss/<ClassName>`` (``_<index>`` appended when a class appears twice).
    Gradient-accumulation behaviour is that of the components.

    Args:
        losses: the component losses, e.g. ``[DPO, SFT]``.
        weights: one non-negative weight per component.
    """

    formula = "Σ_i w_i·ℓ_i"
    paper = "e.g. RPO = DPO + α·SFT: Pang et al. 2024, arXiv 2404.19733"

    def __init__(self, losses: list[PreferenceLoss], weights: list[float]) -> None:
        super().__init__()
        require(len(losses) > 0, "losses", "must name at least one loss, got []")
        require(
            len(weights) == len(losses),
            "weights",
            f"must hold one weight per loss ({len(losses)}), got {len(weights)}",
        )
        require(all(w >= 0 for w in weights), "weights", f"must be >= 0, got {list(weights)}")
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)
        caps = [loss.capabilities() for loss in losses]
        for name in CAPABILITIES:
            combine = all if name in _SUPPORTS else any
            setattr(self, name, combine(c[name] for c in caps))
        kl_rows = [c["needs_kl_rows"] for c in caps]
        names = [type(loss).__name__ for loss in losses]
        require(
            (self.supports_paired or self.supports_unpaired) and all(kl_rows) == any(kl_rows),
            "losses",
            f"must share one batch layout (paired, unpaired, or KTO's KL rows), got {names}",
        )
        counts = Counter(names)
        self.names = [n if counts[n] == 1 else f"{n}_{i}" for i, n in enumerate(names)]

    @property
    def reward_beta(self) -> float:
        """The first component's (whose rewards the output carries)."""
        return self.losses[0].reward_beta

    @property
    def reward_namespace(self) -> str | None:
        """The first component's."""
        return self.losses[0].reward_namespace

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        outputs = [loss(policy, reference, batch) for loss in self.losses]
        total = sum(w * out.loss for w, out in zip(self.weights, outputs))
        metrics = {}
        for name, out in zip(self.names, outputs):
            metrics.update(out.metrics)
            metrics[f"loss/{name}"] = out.loss.detach()
        first = outputs[0]
        return LossOutput(
            total, first.chosen_rewards, first.rejected_rewards, first.target_margin, metrics
        )
