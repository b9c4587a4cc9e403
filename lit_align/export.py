"""Export the policy to a Hugging Face model directory (safetensors + config + tokenizer)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_align import checkpointing, safe_unpickle
from lit_align.collectives import barrier, global_sum, is_distributed, rank
from lit_align.finite import NonFiniteWeightsError, describe, nonfinite
from lit_align.lora import is_peft_model, save_peft


def _full_state_dict(model: nn.Module) -> dict | None:
    """The unsharded state dict on CPU; a collective when torch.distributed is initialised."""
    if not is_distributed():
        return None  # save_pretrained reads the (unsharded) parameters itself
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def export_hf(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dirpath: str,
    merge_adapters: bool = True,
) -> str:
    """Write ``model`` and ``tokenizer`` to ``dirpath``; every rank must call it.

    Returns the directory, loadable with ``AutoModelForCausalLM.from_pretrained``. A LoRA
    (``peft``) policy is written with its adapters merged, or, with ``merge_adapters=False``, as
    the adapters alone (see :func:`lit_align.lora.save_peft`).
    """
    state = _full_state_dict(model)
    _require_finite(model, state, dirpath)
    if rank() == 0:
        os.makedirs(dirpath, exist_ok=True)
        if is_peft_model(model):
            save_peft(model, dirpath, state, merge=merge_adapters)
        else:
            model.save_pretrained(dirpath, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(dirpath)
    barrier()
    return dirpath


def _require_finite(model: nn.Module, state: dict | None, dirpath: str) -> None:
    """Refuse to export non-finite weights (rank 0 checks the full state; all ranks raise)."""
    named = state.items() if state is not None else model.named_parameters()
    bad = nonfinite(named)
    device = next(model.parameters()).device  # where the process group's backend works
    count = global_sum(torch.tensor(float(len(bad)), device=device))
    if float(count) > 0:
        where = describe(bad) if bad else "tensors rank 0 holds"
        raise NonFiniteWeightsError(
            f"refused to export to {dirpath}: non-finite weights in {where}; the run diverged"
        )


def load_checkpoint_weights(module: nn.Module, ckpt_path: str, trusted: bool = False) -> None:
    """Load a lit_align checkpoint's weights into ``module`` (built, unsharded, one process).

    Accepts Lightning's single-file checkpoint (read with ``weights_only=True``) and the
    distributed-checkpoint directory written by ``FSDP2Strategy`` on any number of ranks
    (resharded on load). Only model weights are read; optimizer state is ignored. A directory's
    metadata is read without running code from it unless ``trusted``
    (:mod:`lit_align.safe_unpickle`). Non-finite weights are refused.
    """
    path = Path(ckpt_path)
    checkpointing.check_loadable(path, sharded_ok=True)
    if path.is_dir():
        state = {"state_dict": module.state_dict()}
        safe_unpickle.load_dcp(state, path, trusted)  # fills the tensors in place
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    bad = nonfinite(state["state_dict"].items())
    if bad:
        raise NonFiniteWeightsError(f"--ckpt_path {path}: non-finite weights in {describe(bad)}")
    module.load_state_dict(state["state_dict"])


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuse a non-empty ``--output`` (stale files would mix in); ``overwrite`` empties it."""
    target = Path(output)
    if not (target.is_dir() and any(target.iterdir())):
        return
    if not overwrite:
        raise FileExistsError(
            f"--output {output} is not empty: choose a new directory, or pass --overwrite=true "
            "to replace its contents"
        )
    shutil.rmtree(target)


_RUN_CONFIG_KEYS = ("seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler")


def module_from_run_config(path: str) -> nn.Module:
    """The ``AlignmentModule`` described by a run's saved ``config.yaml`` (not yet built)."""
    import yaml

    from lit_align.lightning_cli import run_lightning_cli  # imports the module and data

    with open(path) as f:
        config = yaml.safe_load(f)
    # Drop the `fit` subcommand's own options (ckpt_path, weights_only, ...).
    kept = {k: v for k, v in config.items() if k in _RUN_CONFIG_KEYS}
    return run_lightning_cli(kept, run=False).model


def main(argv: list[str] | None = None) -> str:
    """``lit-align export``: a saved checkpoint → a Hugging Face model directory."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="lit-align export",
        description="Export the policy of a checkpoint to a Hugging Face model directory.",
    )
    parser.add_argument("--config", required=True, help="the run's config.yaml")
    parser.add_argument("--ckpt_path", required=True, help="checkpoint file or directory")
    parser.add_argument("--output", required=True, help="target directory")
    parser.add_argument(
        "--merge_adapters",
        type=bool,
        default=True,
        help="LoRA policies: merge the adapters into the base model (false: adapters only)",
    )
    parser.add_argument(
        "--overwrite", type=bool, default=False, help="replace the contents of a non-empty --output"
    )
    parser.add_argument(
        "--trust_checkpoint",
        type=bool,
        default=False,
        help="read a sharded checkpoint with plain pickle (only for files you made yourself)",
    )
    args = parser.parse_args(argv)
    prepare_output(args.output, args.overwrite)
    module = module_from_run_config(args.config)
    module.configure_model()
    load_checkpoint_weights(module, args.ckpt_path, args.trust_checkpoint)
    path = export_hf(module.policy.model, module.tokenizer, args.output, args.merge_adapters)
    print(f"exported {args.ckpt_path} to {path}")
    return path
