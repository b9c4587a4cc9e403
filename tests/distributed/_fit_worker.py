"""One rank of a test fit: runs the lit-align CLI and writes what it saw to ``OUT/rank{r}.json``.

Usage (directly, under torchrun, or re-executed by Lightning for ranks >= 1)::

    python _fit_worker.py --out DIR [--ckpt_path PATH] <lit-align fit arguments...>

Recorded per micro-batch: the rank's loss and the number of gradient reduce-scatters issued;
per optimizer step: the module's global ``grad_norm``; after fit: the placement of every
policy and reference parameter.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.distributed.tensor import DTensor

from lit_align.lightning_cli import run_lightning_cli


class Recorder(Callback):
    """Collects per-step values on this rank (read-only: touches no training state)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.reduce_scatters: list[int] = []
        self._calls = 0
        # What FSDP2 calls to reduce gradients: reduce_scatter_single from torch 2.13 on,
        # reduce_scatter_tensor before.
        name = next(
            n for n in ("reduce_scatter_single", "reduce_scatter_tensor") if hasattr(dist, n)
        )
        original = getattr(dist, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls += 1
            return original(*args, **kwargs)

        setattr(dist, name, counted)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:
        self._calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grad_norms.append(pl_module.grad_norm.item())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["record"].loss.item())
        self.reduce_scatters.append(self._calls)


def _placements(module: torch.nn.Module) -> dict[str, dict[str, Any]]:
    out = {}
    for name, p in module.named_parameters():
        sharded = isinstance(p, DTensor)
        out[name] = {
            "dtensor": sharded,
            "placements": [str(x) for x in p.placements] if sharded else [],
            "local_shape": list(p.to_local().shape if sharded else p.shape),
            "shape": list(p.shape),
            "requires_grad": p.requires_grad,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--ckpt_path", default=None)
    ns, cli_args = parser.parse_known_args()
    cli = run_lightning_cli(cli_args, run=False)
    recorder = Recorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ns.ckpt_path)
    module, rank = cli.model, cli.trainer.global_rank
    result = {
        "world_size": cli.trainer.world_size,
        "losses": recorder.losses,
        "grad_norms": recorder.grad_norms,
        "reduce_scatters": recorder.reduce_scatters,
        "activation_checkpointing": module.policy.model.is_gradient_checkpointing,
        "policy": _placements(module.policy),
        "reference": _placements(module.reference) if module.reference is not None else {},
    }
    Path(ns.out).mkdir(parents=True, exist_ok=True)
    Path(ns.out, f"rank{rank}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
