"""Reward models: Bradley-Terry training (:class:`RewardModule`) and dataset scoring."""

from lit_align.reward.loss import BradleyTerryLoss
from lit_align.reward.module import RewardModule

__all__ = ["BradleyTerryLoss", "RewardModule"]
