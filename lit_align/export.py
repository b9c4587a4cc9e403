"""Export the policy to a Hugging Face model directory (safetensors + config + tokenizer)."""

from __future__ import annotations

import os

import torch.distributed as dist
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _full_state_dict(model: nn.Module) -> dict | None:
    """The unsharded state dict on CPU; a collective when torch.distributed is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return None  # save_pretrained reads the (unsharded) parameters itself
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def export_hf(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dirpath: str) -> str:
    """Write ``model`` and ``tokenizer`` to ``dirpath``; every rank must call it.

    Returns the directory, loadable with ``AutoModelForCausalLM.from_pretrained``.
    """
    state = _full_state_dict(model)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank == 0:
        os.makedirs(dirpath, exist_ok=True)
        model.save_pretrained(dirpath, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(dirpath)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
    return dirpath
