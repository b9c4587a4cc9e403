"""lit_align: preference alignment of causal language models with PyTorch Lightning."""

__version__ = "0.1.0"
