"""Callbacks: export, and monitors of gradients, rewards and instability."""

from lit_align.callbacks.grad_norm import GradNormMonitor
from lit_align.callbacks.hf_export import HFExport
from lit_align.callbacks.instability import InstabilityMonitor
from lit_align.callbacks.preemption import PreemptionCheckpoint
from lit_align.callbacks.resume_guard import ResumeGuard
from lit_align.callbacks.reward_margins import RewardMarginMonitor
from lit_align.callbacks.weight_guard import WeightGuard

__all__ = [
    "HFExport",
    "GradNormMonitor",
    "InstabilityMonitor",
    "PreemptionCheckpoint",
    "ResumeGuard",
    "RewardMarginMonitor",
    "WeightGuard",
]
