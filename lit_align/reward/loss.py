"""The Bradley-Terry loss of a reward model, with TRL ``RewardTrainer``'s margin and centering."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_align.losses.base import Capabilities, require
from lit_align.types import LossOutput, PreferenceBatch


class BradleyTerryLoss(Capabilities, nn.Module):
    """``−logσ(r_w − r_l − m) + c·mean((r_w + r_l)²)`` over the pairs of a batch.

    Bradley & Terry (1952): ``P(y_w ≻ y_l) = σ(r_w − r_l)``; the reward model maximises the
    log-likelihood of the observed preferences (Ouyang et al. 2022, arXiv 2203.02155, eq. 1).
    Two variants as in TRL's ``RewardTrainer``:

    * margin (Llama 2, Touvron et al. 2023, arXiv 2307.09288, eq. 2): ``m`` is how much the chosen
      reward should exceed the rejected one. TRL reads it from a ``margin`` column; here
      ``m = margin_scale·(score_chosen − score_rejected)``, from the scores the data carries
      (``margin_scale = 0``: no margin).
    * centering (Eisenstein et al. 2023, arXiv 2312.09244): ``c·mean((r_w + r_l)²)`` keeps the
      rewards centred on zero, which the loss itself leaves free (it sees only differences).

    Args:
        margin_scale: weight of the pair's score gap in the margin ``m``; ``0`` disables it; >= 0.
        center_rewards_coefficient: ``c``, weight of the centering term; >= 0.
    """

    requires_reference: ClassVar[bool] = False

    def __init__(self, margin_scale: float = 0.0, center_rewards_coefficient: float = 0.0) -> None:
        super().__init__()
        require(margin_scale >= 0, "margin_scale", f"must be >= 0, got {margin_scale}")
        coefficient = center_rewards_coefficient
        require(coefficient >= 0, "center_rewards_coefficient", f"must be >= 0, got {coefficient}")
        self.margin_scale = margin_scale
        self.center_rewards_coefficient = center_rewards_coefficient

    def forward(self, chosen: Tensor, rejected: Tensor, batch: PreferenceBatch) -> LossOutput:
        """The loss of ``B`` pairs from their ``(B,)`` chosen and rejected rewards."""
        diff = chosen - rejected  # (B,)
        if self.margin_scale:
            diff = diff - self.margin_scale * self._score_gap(batch)
        loss = -F.logsigmoid(diff).mean()
        if self.center_rewards_coefficient:
            loss = loss + self.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
        return LossOutput(loss, chosen.detach(), rejected.detach())

    def _score_gap(self, batch: PreferenceBatch) -> Tensor:
        if batch.score_chosen is None or batch.score_rejected is None:
            raise ValueError(
                "--model.loss.margin_scale > 0 takes the margin from the pairs' score gap, but "
                "the batch carries no score_chosen/score_rejected; set margin_scale to 0 or use "
                "data with scores"
            )
        return batch.score_chosen - batch.score_rejected  # (B,)
