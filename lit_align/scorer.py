"""The scorer: a causal LM returning the response log-probs of a batch (the log-prob entry point).

:class:`CausalLMScorer` wraps a Hugging Face causal LM (policy or reference) and scores a
:class:`~lit_align.types.PreferenceBatch`, padded or packed; :func:`decoder_layers` finds its
transformer blocks (for sharding, activation checkpointing and compilation);
:func:`compile_blocks` and :func:`frozen_copy` prepare scorers for training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from lit_align.logps import naive_response_logps, response_logps, selected_logps
from lit_align.types import PackedBatch, PreferenceBatch, SequenceLogps


def decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM (for sharding/checkpointing).

    Args:
        model: a Hugging Face causal LM, possibly wrapped by ``peft``.
        path: dotted path of the ``nn.ModuleList`` from the (unwrapped) model, e.g.
            ``model.layers``; None finds the ``nn.ModuleList`` whose children are the classes
            the model names in ``_no_split_modules``.

    Raises:
        ValueError: naming ``--model.policy.decoder_layers`` when no block list is found.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    if path is not None:
        return _module_list_at(base, path)
    block_names = set(getattr(base, "_no_split_modules", None) or ())
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if type(module[0]).__name__ in block_names:
                return module
    raise ValueError(
        f"cannot find the decoder layers of {type(base).__name__}: it declares no "
        "_no_split_modules naming the blocks of an nn.ModuleList. Set "
        "--model.policy.decoder_layers to the dotted path of that list (e.g. model.layers), "
        "or disable sharding and activation checkpointing"
    )


def _module_list_at(model: nn.Module, path: str) -> nn.ModuleList:
    try:
        found = model.get_submodule(path)
    except AttributeError:
        found = None
    if not isinstance(found, nn.ModuleList) or len(found) == 0:
        what = "nothing" if found is None else type(found).__name__
        raise ValueError(
            f"--model.policy.decoder_layers={path!r}: expected a non-empty nn.ModuleList of "
            f"transformer blocks in {type(model).__name__}, found {what}"
        )
    return found


class CausalLMScorer(nn.Module):
    """Wraps a Hugging Face causal LM and returns response log-probs of a batch.

    The forward runs the decoder to the final hidden states and projects only the response
    positions through the lm_head, in chunks (:func:`lit_align.logps.response_logps`), so the
    ``(N, T, V)`` logits tensor is never built — except for models that soft-cap their final
    logits (Gemma 2, ``config.final_logit_softcapping``), scored exactly from full logits. Being
    a module whose forward does the whole computation, it is the natural root for FSDP2
    (embeddings, final norm and lm_head are unsharded by the root's pre-forward hook).

    Args:
        model: the Hugging Face causal LM (or its ``peft`` wrapper).
        chunk_size: response positions projected through the lm_head at a time.
        layers_path: ``PolicyConfig.decoder_layers``, for models that do not declare their blocks.
    """

    def __init__(
        self, model: PreTrainedModel, chunk_size: int = 1024, layers_path: str | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.layers_path = layers_path

    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (see :func:`decoder_layers`)."""
        return decoder_layers(self.model, self.layers_path)

    def forward(
        self,
        batch: PreferenceBatch,
        with_token_logps: bool = False,
        with_entropy: bool = False,
    ) -> SequenceLogps:
        options = dict(
            chunk_size=self.chunk_size, with_token_logps=with_token_logps, with_entropy=with_entropy
        )
        if isinstance(batch, PackedBatch):  # made by --data.packing true
            return self._packed_forward(batch, options)
        decoder = self.model.get_decoder()
        hidden = decoder(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state  # (N, T, H)
        head, logps_fn = self.model.get_output_embeddings(), response_logps
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:  # Gemma 2: logits = cap·tanh(z / cap), which the chunked path cannot apply
            head, logps_fn = _softcapped(head, cap), naive_response_logps
        return logps_fn(hidden, head, batch.input_ids, batch.response_mask, **options)

    def _packed_forward(self, batch: PackedBatch, options: dict) -> SequenceLogps:
        """The packed row through the decoder (attention stays within each sequence, see
        :mod:`lit_align.data.packing`), then the response tokens the collator selected."""
        config, packed = self.model.config, batch.packed
        if getattr(config, "final_logit_softcapping", None):
            raise ValueError("--data.packing true: soft-capped logits (Gemma 2) are unsupported")
        kwargs = packed.attention_kwargs(config._attn_implementation)
        kwargs.update(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False)
        hidden = self.model.get_decoder()(**kwargs).last_hidden_state[0]  # (L, H)
        source, head = packed.source, self.model.get_output_embeddings()  # (M,) predictors
        selected = (hidden[source], packed.input_ids[0, source + 1], packed.rows, packed.cols)
        return selected_logps(*selected, head, batch.response_mask, **options)


def compile_blocks(*scorers: CausalLMScorer) -> None:
    """``torch.compile`` each decoder layer of ``scorers`` in place (``nn.Module.compile``).

    Call after activation checkpointing (which then wraps the compiled layer) and before FSDP2
    sharding (whose hooks stay outside the graphs): torchtitan's order. The layers share one
    graph; shapes that vary between batches become dynamic after the first recompilation.
    """
    for scorer in scorers:
        for layer in scorer.blocks():
            layer.compile()


def _softcapped(head: nn.Module, cap: float) -> Callable[[Tensor], Tensor]:
    """The output head followed by final-logit soft-capping (full ``(N, T, V)`` logits)."""
    return lambda hidden: cap * torch.tanh(head(hidden) / cap)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy with gradients off and in eval mode (the reference model)."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()
