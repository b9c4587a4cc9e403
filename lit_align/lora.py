"""LoRA: adapters on the policy, the adapter-disabled reference, and the export of adapters.

With ``--model.policy.lora`` the policy is wrapped by ``peft.get_peft_model``: only the adapters
are trainable, and the reference model of the loss is the same network with its adapters
disabled (:class:`AdapterDisabledScorer`), so no second copy of the base model is built. At the
start the adapters are zero (``B = 0``): policy and reference agree exactly (DPO starts at
``ln 2``). Checkpoints hold the whole policy, adapters included. :func:`save_peft` exports the
merged model (a plain Hugging Face directory) or the adapters alone.

``peft`` is an optional dependency (``pip install 'lit_align[peft]'``), imported only when used.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lit_align.scorer import CausalLMScorer
from lit_align.types import PreferenceBatch, SequenceLogps


@dataclass(frozen=True)
class LoRASettings:
    """Low-rank adapters (Hu et al. 2021, arXiv 2106.09685) added by ``peft``.

    Each targeted linear layer ``W`` becomes ``W + (alpha / r)·B·A``, with ``A`` random and
    ``B = 0`` at the start, so the adapted model starts equal to the base model.

    Attributes:
        r: adapter rank; >= 1.
        alpha: scaling numerator (the update is scaled by ``alpha / r``); > 0.
        dropout: dropout on the adapter's input, in ``[0, 1)``.
        target_modules: module names to adapt (``[q_proj, v_proj]``) or ``all-linear`` (every
            linear layer but the output head).
    """

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"--model.policy.lora.r must be >= 1, got {self.r}")
        if self.alpha <= 0:
            raise ValueError(f"--model.policy.lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--model.policy.lora.dropout must be in [0, 1), got {self.dropout}")


def apply_lora(
    model: nn.Module, settings: LoRASettings | None, task_type: str = "CAUSAL_LM"
) -> nn.Module:
    """``model`` wrapped with new adapters (base weights frozen); as is if ``settings`` is None.

    ``task_type`` is peft's: ``SEQ_CLS`` (a reward model) also trains and saves the new
    classification head in full.
    """
    if settings is None:
        return model
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("--model.policy.lora needs peft: pip install 'lit_align[peft]'") from err
    targets = settings.target_modules
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type=task_type,
    )
    return get_peft_model(model, config)


def is_peft_model(model: nn.Module) -> bool:
    """True for a ``peft`` wrapper (it has adapters to disable, merge or save)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


class AdapterDisabledScorer(nn.Module):
    """The reference of a LoRA policy: the policy's own forward with its adapters disabled.

    Holds the policy without registering it, so it has no parameters of its own and is never
    saved; it is always in eval mode (dropout off), like a frozen copy would be. Callers run it
    under ``torch.no_grad()``, as they would a frozen reference.
    """

    def __init__(self, policy: CausalLMScorer) -> None:
        super().__init__()
        if not is_peft_model(policy.model):
            raise TypeError("AdapterDisabledScorer needs a policy wrapped by peft (model.lora)")
        self._policy = (policy,)  # a tuple: not a registered submodule
        self.eval()

    def forward(
        self, batch: PreferenceBatch, with_token_logps: bool = False, with_entropy: bool = False
    ) -> SequenceLogps:
        (policy,) = self._policy
        was_training = policy.training
        policy.eval()
        try:
            with policy.model.disable_adapter():
                return policy(batch, with_token_logps, with_entropy)
        finally:
            policy.train(was_training)


def save_peft(
    model: nn.Module, dirpath: str, state: dict[str, Any] | None, merge: bool = True
) -> None:
    """Write a ``peft`` model to ``dirpath`` (call on one rank).

    Args:
        model: the ``peft`` wrapper (possibly sharded: then ``state`` is required).
        dirpath: target directory.
        state: the wrapper's full (unsharded, CPU) state dict; None reads ``model``'s own.
        merge: write the base model with the adapters merged in (``merge_and_unload``), loadable
            with ``AutoModelForCausalLM.from_pretrained``; False writes the adapters only
            (``adapter_model.safetensors``, loadable with ``peft.PeftModel.from_pretrained``).
    """
    if state is None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if not merge:
        model.save_pretrained(dirpath, state_dict=state, safe_serialization=True)
        return
    # safe_merge adds each update to a clone: ``state`` may share storage with the live policy
    merged = _unsharded_copy(model, state).merge_and_unload(safe_merge=True)
    merged.save_pretrained(dirpath, safe_serialization=True)


def _unsharded_copy(model: nn.Module, state: dict[str, Any]) -> nn.Module:
    """A plain (unsharded) copy of ``model`` holding ``state``, built without allocating twice.

    The structure is built on the meta device and takes ``state``'s tensors (``assign``);
    non-persistent buffers stay on meta: merging and saving do not read them.
    """
    from peft import get_peft_model

    base = model.get_base_model()
    config = copy.deepcopy(model.peft_config[model.active_adapter])
    with torch.device("meta"):
        skeleton = get_peft_model(type(base)(copy.deepcopy(base.config)), config)
    skeleton.load_state_dict(state, assign=True)
    return skeleton
