"""Building a reward model: a causal LM's decoder with a one-output sequence-classification head."""

from __future__ import annotations

import copy
import os

import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer
from lit_align.scorer import decoder_layers
from lit_align.types import PreferenceBatch


def build_reward_model(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """``AutoModelForSequenceClassification`` with one output (the reward), from ``cfg``.

    ``cfg.pretrained`` (a causal LM, or a reward model to train further) gives the decoder its
    weights and the head starts new; without it the whole model is new, built from the same
    config a new policy would have (``cfg.architecture`` + ``cfg.config``, the tokenizer's
    vocabulary and special tokens). The config's ``pad_token_id`` is the tokenizer's, which
    decides where the score is read (see :class:`RewardScorer`).
    """
    dtype = getattr(torch, cfg.dtype)  # validated by PolicyConfig
    if cfg.pretrained is None:
        # The config a new policy would get (vocabulary, special tokens, overrides, checks);
        # building that small random model is the price of not repeating its rules here.
        config = copy.deepcopy(build_causal_lm(cfg, tokenizer).config)
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            os.path.expanduser(cfg.pretrained),
            num_labels=1,
            revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code,
            attn_implementation=cfg.attn_implementation,
            dtype=dtype,
            **cfg.config,
        )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


class RewardScorer(nn.Module):
    """Wraps an ``AutoModelForSequenceClassification`` and returns one reward per row.

    The reward of a row is the head's output at its last token that is not the pad token
    (Hugging Face's rule for these models, so any ``AutoModelForSequenceClassification`` loaded
    from the export reads the same position). With right padding that is the last real token,
    except that trailing tokens equal to the pad token are skipped too, as when eos doubles as
    pad (the final eos of each response). As the module whose forward runs the whole model, it is
    the root FSDP2 shards (see :func:`lit_align.distributed.shard_scorer`).

    Args:
        model: the sequence-classification model (or its ``peft`` wrapper).
        layers_path: ``PolicyConfig.decoder_layers``, for models that do not declare their blocks.
    """

    def __init__(self, model: PreTrainedModel, layers_path: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.layers_path = layers_path

    def blocks(self) -> nn.ModuleList:
        """The transformer blocks (see :func:`lit_align.models.decoder_layers`)."""
        return decoder_layers(self.model, self.layers_path)

    def forward(self, batch: PreferenceBatch) -> Tensor:
        """``(N,)`` float32 rewards of the batch's ``N`` rows (``2B``: chosen rows, then rejected).

        A packed batch is scored through its padded view (see :mod:`lit_align.data.packing`).
        """
        out = self.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        )
        return out.logits[:, 0].float()  # (N,)


def load_reward_model(
    path: str, dtype: str = "float32", device: torch.device | str = "cpu"
) -> tuple[RewardScorer, PreTrainedTokenizerBase]:
    """A reward model directory (``lit-align`` export or any one-output
    ``AutoModelForSequenceClassification``) and its tokenizer, in eval mode on ``device``."""
    cfg = PolicyConfig(pretrained=path, dtype=dtype)
    tokenizer = load_tokenizer(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(
        os.path.expanduser(path), dtype=getattr(torch, cfg.dtype)
    )
    if model.config.num_labels != 1:
        raise ValueError(
            f"--model {path!r}: a reward model has one output, this one has "
            f"{model.config.num_labels} (num_labels)"
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return RewardScorer(model).to(device).eval(), tokenizer
