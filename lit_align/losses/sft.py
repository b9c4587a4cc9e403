"""SFT: negative log-likelihood of the preferred responses."""

from __future__ import annotations

from lit_align.losses._common import split_by_label
from lit_align.losses.base import PreferenceLoss
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps


class SFT(PreferenceLoss):
    """Supervised fine-tuning on the chosen (paired) or desirable (unpaired) responses.

    ``ℓ = −c̄``: each response's per-token mean log-prob ``c̄ = c/|y|``, averaged over responses.
    Normalisation: every response weighs the same whatever its length (mean of per-sequence token
    means). The other common choice, one token-mean over all tokens of the micro-batch, weighs long
    responses more and changes with how rows are split into micro-batches; the mean of means is
    invariant under gradient accumulation with equal micro-batch sizes.

    Paired batches: the mean runs over the ``B`` chosen rows. Unpaired batches: the sum over the
    desirable rows is divided by all ``N`` rows (undesirable rows contribute 0), so the loss stays
    invariant under gradient accumulation even when micro-batches hold different numbers of
    desirable rows; its scale is therefore proportional to the desirable fraction.

    The rejected responses of paired data are never scored (``needs_rejected = False``): the
    module hands the loss the chosen rows as an unpaired batch of desirable rows, whose loss is
    the paired one. Rewards reported: the per-token mean log-probs ``c̄`` and ``r̄``, logged as
    ``sft/rewards/*`` (``rewards/*`` are the summed log-probs). No reference needed.
    Combine with a preference loss through :class:`~lit_align.losses.WeightedSum` (e.g. RPO =
    DPO + α·SFT).
    """

    formula = "−c̄ (chosen or desirable responses)"
    paper = "Ouyang et al. 2022 (InstructGPT), arXiv 2203.02155"

    requires_reference = False
    supports_unpaired = True
    optimizes_margin = False
    needs_rejected = False
    own_reward_scale = "sft"

    def forward(
        self, policy: SequenceLogps, reference: SequenceLogps | None, batch: PreferenceBatch
    ) -> LossOutput:
        mean = policy.mean  # (N,)
        if batch.paired:
            chosen, rejected = mean.chunk(2)  # (B,) each
            loss = -chosen.mean()
        else:
            chosen, rejected = split_by_label(mean, batch.labels)
            loss = -chosen.sum() / mean.shape[0]
        return LossOutput(loss, chosen.detach(), rejected.detach())
