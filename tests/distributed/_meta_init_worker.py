"""One rank of the meta-init test: a short FSDP2 fit of a ``pretrained`` model, recorded.

Usage (under torchrun)::

    python _meta_init_worker.py --out DIR <lit-align fit arguments...>

Writes ``OUT/rank{r}.json``: the Hugging Face ``from_pretrained`` calls this rank made (counted by
wrapping ``PreTrainedModel.from_pretrained`` before anything loads), the full logits of the
policy and of the reference on ``INPUT_IDS`` just before the first step (each scorer's root
unsharded, eval mode; the reference only when it is a frozen copy, not LoRA's disabled adapters),
the per-micro-batch losses and the placement of every parameter.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel

from lit_align.lightning_cli import run_lightning_cli
from lit_align.types import PreferenceBatch

INPUT_IDS = [[3, 9, 14, 20, 7, 31, 2, 5], [11, 4, 4, 18, 25, 40, 6, 2]]
FROM_PRETRAINED_CALLS: list[str] = []
_from_pretrained = PreTrainedModel.from_pretrained.__func__


def _counted_from_pretrained(cls, *args: Any, **kwargs: Any) -> PreTrainedModel:
    FROM_PRETRAINED_CALLS.append(cls.__name__)
    return _from_pretrained(cls, *args, **kwargs)


def _logits(scorer: torch.nn.Module) -> list:
    """Full ``(2, 8, V)`` logits of the HF model inside a sharded scorer, in eval mode."""
    ids = torch.tensor(INPUT_IDS)
    was_training = scorer.training
    scorer.eval()
    with torch.no_grad():
        scorer(PreferenceBatch(ids, torch.ones_like(ids), torch.ones_like(ids, dtype=torch.bool)))
        scorer.unshard()  # after a root forward: the root's parameters (embeddings, norm, head)
        logits = scorer.model(input_ids=ids).logits  # the layers gather their own
        scorer.reshard()
    scorer.train(was_training)
    return logits.tolist()


def _placements(module: torch.nn.Module) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "dtensor": isinstance(p, DTensor),
            "local_rows": (p.to_local() if isinstance(p, DTensor) else p).shape[0],
            "rows": p.shape[0],
            "requires_grad": p.requires_grad,
        }
        for name, p in module.named_parameters()
    }


class Recorder(Callback):
    """Records logits before the first step and each micro-batch's loss (read-only)."""

    def __init__(self) -> None:
        self.result: dict[str, Any] = {"losses": []}

    def on_train_start(self, trainer, pl_module) -> None:
        self.result["policy_logits"] = _logits(pl_module.policy)
        if list(pl_module.reference.parameters()):  # a frozen copy, not LoRA's disabled adapters
            self.result["reference_logits"] = _logits(pl_module.reference)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.result["losses"].append(outputs["record"].loss.item())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    ns, cli_args = parser.parse_known_args()
    PreTrainedModel.from_pretrained = classmethod(_counted_from_pretrained)  # before any load
    cli = run_lightning_cli(cli_args, run=False)
    recorder = Recorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    module = cli.model
    result = {
        **recorder.result,
        "world_size": cli.trainer.world_size,
        "from_pretrained_calls": FROM_PRETRAINED_CALLS,
        "policy": _placements(module.policy),
        "reference": _placements(module.reference),
    }
    Path(ns.out).mkdir(parents=True, exist_ok=True)
    Path(ns.out, f"rank{cli.trainer.global_rank}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
