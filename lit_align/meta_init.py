"""Meta-device initialisation: shard a large pretrained model without a full copy per rank.

Loading ``pretrained`` on every rank holds ``world_size`` full copies in host memory at once
(8 × 32 GB for an 8B model in float32). With ``PolicyConfig.meta_init`` (on by default when
``FSDP2Strategy`` shards a pretrained model), ``AlignmentModule.configure_model`` instead:

1. builds the architecture on the meta device on every rank (no memory, no weight file read);
2. shards it (parameters become meta ``DTensor`` shards) and, in :func:`load_sharded`,
   allocates each rank's shards with ``to_empty`` (uninitialised memory);
3. recomputes the non-persistent buffers, which no checkpoint holds (rotary ``inv_freq`` and
   ``original_inv_freq``, Gemma's ``embed_scale``, …): see :func:`recompute_buffers`;
4. lets rank 0 alone load the full model on CPU, exactly as an unsharded run would (LoRA
   adapters included), and sends every rank its shards tensor by tensor with
   ``set_model_state_dict(..., StateDictOptions(full_state_dict=True,
   broadcast_from_rank0=True))``. The frozen reference receives the same state dict.

Ranks other than 0 never read the weight files. Without step 3 the buffers stay uninitialised
memory, different on each rank, and the logits silently differ (~1e-2).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lit_align.collectives import rank
from lit_align.distributed import FSDP2Strategy
from lit_align.lora import apply_lora
from lit_align.models import PolicyConfig, build_causal_lm
from lit_align.scorer import CausalLMScorer

_FLAG = "_is_hf_initialized"  # transformers' mark of a tensor its init functions leave alone


def meta_init_enabled(cfg: PolicyConfig, trainer: Trainer | None) -> bool:
    """Whether to build on the meta device: ``cfg.meta_init``, or auto (sharded + pretrained)."""
    sharded = trainer is not None and isinstance(trainer.strategy, FSDP2Strategy)
    if cfg.meta_init is None:
        return sharded and cfg.pretrained is not None
    if cfg.meta_init and not sharded:
        raise ValueError(
            "--model.policy.meta_init=true needs --trainer.strategy=FSDP2Strategy (the model is "
            "materialised shard by shard); set meta_init to null or false"
        )
    return cfg.meta_init


def load_sharded(
    cfg: PolicyConfig,
    tokenizer: PreTrainedTokenizerBase,
    scorers: Sequence[CausalLMScorer],
    device: torch.device,
) -> None:
    """Materialise meta-built, sharded ``scorers`` on ``device`` with ``cfg.pretrained``'s weights.

    A collective: every rank calls it with the same structure. Only rank 0 reads the weights.
    """
    for scorer in scorers:
        scorer.to_empty(device=device)
        recompute_buffers(scorer)
    full = _rank0_state_dict(cfg, tokenizer)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    for scorer in scorers:
        set_model_state_dict(scorer, dict(full), options=options)  # it consumes the dict


def _rank0_state_dict(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase) -> dict:
    """The full state dict of the policy as built unsharded, on rank 0; empty elsewhere."""
    if rank() != 0:
        return {}
    rank_zero_info(f"meta init: rank 0 loads {cfg.pretrained} and broadcasts the shards")
    model = apply_lora(build_causal_lm(cfg, tokenizer), cfg.lora)
    return {f"model.{key}": value for key, value in model.state_dict().items()}  # scorer keys


def recompute_buffers(root: nn.Module) -> None:
    """Recompute the non-persistent buffers of ``root`` (after ``to_empty``), in place.

    Each module holding one is passed to its model's ``_init_weights`` (the nearest Hugging Face
    ``PreTrainedModel`` above it), which is how transformers >= 5 computes these same buffers
    when ``from_pretrained`` loads on the meta device; the module's parameters are flagged as
    initialised so that only the buffers are written. Floating buffers are set to NaN first,
    so any buffer the model's ``_init_weights`` leaves alone is detected and reported.

    Raises:
        ValueError: naming ``--model.policy.meta_init`` when a buffer cannot be recomputed.
    """
    from transformers.initialization import guard_torch_init_functions

    for module, owner in _with_owner(root, None):
        buffers = {n: module._buffers.get(n) for n in module._non_persistent_buffers_set}
        buffers = {n: b for n, b in buffers.items() if b is not None}
        if not buffers:
            continue
        if owner is None or not all(b.is_floating_point() for b in buffers.values()):
            _cannot(module, list(buffers), "it is not a floating buffer of a Hugging Face model")
        for buffer in buffers.values():
            buffer.fill_(math.nan)
        with torch.no_grad(), guard_torch_init_functions(), _parameters_skipped(module):
            owner._init_weights(module)
        unset = [n for n in buffers if not torch.isfinite(module._buffers[n]).all()]
        if unset:
            _cannot(module, unset, f"{type(owner).__name__}._init_weights does not compute them")


@contextmanager
def _parameters_skipped(module: nn.Module) -> Iterator[None]:
    """Flag ``module``'s own parameters as initialised: transformers' init functions skip them."""
    params = [p for p in module.parameters(recurse=False) if not getattr(p, _FLAG, False)]
    for param in params:
        setattr(param, _FLAG, True)
    try:
        yield
    finally:
        for param in params:
            delattr(param, _FLAG)


def _with_owner(
    module: nn.Module, owner: PreTrainedModel | None
) -> Iterator[tuple[nn.Module, PreTrainedModel | None]]:
    """Every submodule with the nearest ``PreTrainedModel`` at or above it."""
    owner = module if isinstance(module, PreTrainedModel) else owner
    yield module, owner
    for child in module.children():
        yield from _with_owner(child, owner)


def _cannot(module: nn.Module, names: list[str], why: str) -> None:
    raise ValueError(
        f"meta init cannot recompute the non-persistent buffers {sorted(names)} of "
        f"{type(module).__name__} ({why}); set --model.policy.meta_init=false to load the "
        "full model on every rank"
    )
