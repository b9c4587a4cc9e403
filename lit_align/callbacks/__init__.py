"""Callbacks: export, and monitors of gradients, rewards and instability."""

from lit_align.callbacks.grad_norm import GradNormMonitor
from lit_align.callbacks.hf_export import HFExport
from lit_align.callbacks.instability import InstabilityMonitor
from lit_align.callbacks.reward_margins import RewardMarginMonitor

__all__ = ["HFExport", "GradNormMonitor", "InstabilityMonitor", "RewardMarginMonitor"]
