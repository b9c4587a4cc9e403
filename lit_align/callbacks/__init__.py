"""Callbacks: export, and monitors of gradients, rewards and instability."""

from lit_align.callbacks.hf_export import HFExport

__all__ = ["HFExport"]
