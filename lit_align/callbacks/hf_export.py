"""HFExport: write the trained policy as a Hugging Face model directory at the end of fit."""

from __future__ import annotations

import os

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lit_align.export import export_hf


class HFExport(Callback):
    """Saves ``pl_module.policy.model`` and ``pl_module.tokenizer`` when fit ends.

    Args:
        dirpath: target directory; relative paths are resolved inside the run directory
            (``trainer.log_dir``), so ``export`` writes ``<run dir>/export``.
        merge_adapters: for a LoRA policy, write the base model with the adapters merged in
            (loadable with ``AutoModelForCausalLM.from_pretrained``); False writes the adapters
            alone (``peft.PeftModel.from_pretrained``). Ignored without LoRA.
    """

    def __init__(self, dirpath: str = "export", merge_adapters: bool = True) -> None:
        if not dirpath:
            raise ValueError("HFExport dirpath must be a non-empty path")
        self.dirpath = dirpath
        self.merge_adapters = merge_adapters

    def target(self, trainer: Trainer) -> str:
        """The export directory of this run."""
        if os.path.isabs(self.dirpath):
            return self.dirpath
        return os.path.join(trainer.log_dir or trainer.default_root_dir, self.dirpath)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        model, tokenizer = pl_module.policy.model, pl_module.tokenizer
        path = export_hf(model, tokenizer, self.target(trainer), self.merge_adapters)
        rank_zero_info(f"exported the policy to {path}")
