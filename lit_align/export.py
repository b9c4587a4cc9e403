"""Export the policy to a Hugging Face model directory (safetensors + config + tokenizer)."""

from __future__ import annotations

import os

import torch.distributed as dist
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_align.lora import is_peft_model, save_peft


def _full_state_dict(model: nn.Module) -> dict | None:
    """The unsharded state dict on CPU; a collective when torch.distributed is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
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
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        os.makedirs(dirpath, exist_ok=True)
        if is_peft_model(model):
            save_peft(model, dirpath, state, merge=merge_adapters)
        else:
            model.save_pretrained(dirpath, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(dirpath)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return dirpath


def load_checkpoint_weights(module: nn.Module, ckpt_path: str) -> None:
    """Load a lit_align checkpoint's weights into ``module`` (built, unsharded, one process).

    Accepts Lightning's single-file checkpoint (read with ``weights_only=True``) and the
    distributed-checkpoint directory written by ``FSDP2Strategy`` on any number of ranks
    (resharded on load). Only model weights are read; optimizer state is ignored. Only load
    directories you trust: ``torch.distributed.checkpoint`` unpickles their ``.metadata`` file
    without the ``weights_only`` restrictions.
    """
    import torch

    if os.path.isdir(ckpt_path):
        import torch.distributed.checkpoint as dcp

        state = {"state_dict": module.state_dict()}
        dcp.load(state, checkpoint_id=ckpt_path)  # fills the tensors in place
        module.load_state_dict(state["state_dict"])
    elif os.path.isfile(ckpt_path):
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        module.load_state_dict(checkpoint["state_dict"])
    else:
        raise FileNotFoundError(f"--ckpt_path: no checkpoint file or directory at {ckpt_path!r}")


_RUN_CONFIG_KEYS = ("seed_everything", "trainer", "model", "data", "optimizer", "lr_scheduler")


def module_from_run_config(path: str) -> nn.Module:
    """The ``AlignmentModule`` described by a run's saved ``config.yaml`` (not yet built)."""
    import yaml

    from lit_align.cli import run_lightning_cli

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
    args = parser.parse_args(argv)
    module = module_from_run_config(args.config)
    module.configure_model()
    load_checkpoint_weights(module, args.ckpt_path)
    path = export_hf(module.policy.model, module.tokenizer, args.output, args.merge_adapters)
    print(f"exported {args.ckpt_path} to {path}")
    return path
