"""Loading causal LMs and tokenizers: the policy's configuration, its tokenizer, its model.

One code path serves a hub id, a local directory and a tiny model built from a config: the
embedded quickstart builds its model from ``PolicyConfig(pretrained=None, config={...})`` and,
after SFT, loads the exported directory back with ``from_pretrained`` like any real checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_align.finite import require_finite
from lit_align.lora import LoRASettings

BUILTIN_PREFIX = "builtin:"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class PolicyConfig:
    """Which causal LM to align.

    Attributes:
        pretrained: hub id or local directory of a Hugging Face causal LM; None builds a new
            model from ``architecture`` and ``config`` (random weights, seeded).
        architecture: ``model_type`` used when ``pretrained`` is None (``llama``, ``qwen2``, …).
        config: config overrides (layer count, hidden size, …) applied on top of the pretrained
            config or the architecture's defaults.
        tokenizer: tokenizer hub id or directory; defaults to ``pretrained``. ``builtin:sort``
            is the embedded task's character tokenizer.
        revision: hub revision (branch, tag or commit) for ``pretrained`` and ``tokenizer``.
        trust_remote_code: allow repository code to run when loading (off unless asked for).
        attn_implementation: Hugging Face attention backend (``sdpa``, ``eager``, …).
        dtype: parameter dtype when loading: ``float32``, ``bfloat16`` or ``float16``.
        meta_init: build the model on the meta device, shard it, and let rank 0 alone read the
            ``pretrained`` weights and broadcast each rank its shards (see
            :mod:`lit_align.meta_init`); None (auto) does so whenever ``FSDP2Strategy`` shards a
            ``pretrained`` model. False loads the full model on every rank first.
        decoder_layers: dotted path, from the Hugging Face model, of the ``nn.ModuleList`` of
            transformer blocks (e.g. ``model.layers``); None finds it from the model's
            ``_no_split_modules``. Needed only for models that declare none.
        lora: train low-rank adapters (``peft``) instead of the full model; the reference is
            then the same model with its adapters disabled (no second copy).
        gguf_file: a GGUF checkpoint (llama.cpp's format) in ``pretrained`` (a directory or hub
            repository) to load model and tokenizer from; transformers dequantises its weights
            to ``dtype`` (needs the ``gguf`` package). The model is then an ordinary one:
            trainable, shardable, exportable.
    """

    pretrained: str | None = None
    architecture: str = "llama"
    config: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = "sdpa"
    dtype: str = "float32"
    meta_init: bool | None = None
    decoder_layers: str | None = None
    lora: LoRASettings | None = None
    gguf_file: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(
                f"--model.policy.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}"
            )
        if self.pretrained is None and self.tokenizer is None:
            raise ValueError(
                "--model.policy.tokenizer is required when --model.policy.pretrained is not set "
                "(a new model needs a tokenizer for its vocabulary size)"
            )
        if self.gguf_file and self.pretrained is None:
            raise ValueError(
                "--model.policy.gguf_file needs --model.policy.pretrained: the directory or hub "
                f"repository holding {self.gguf_file!r}"
            )
        if self.meta_init and self.pretrained is None:
            raise ValueError(
                "--model.policy.meta_init=true needs --model.policy.pretrained (a new model has "
                "no weights to load); set meta_init to null or false"
            )


def _is_local_path(name: str) -> bool:
    """Hub ids are ``org/name``; anything else path-like is a local directory."""
    explicit = name.startswith(("/", ".", "~")) or name.count("/") > 1
    return explicit or os.path.exists(os.path.expanduser(name))


def _check_local(name: str, flag: str) -> None:
    if _is_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise FileNotFoundError(f"{flag}: directory {name!r} does not exist")


def _hub_kwargs(cfg: PolicyConfig, path: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments of ``cfg`` for the model at ``path``."""
    hub = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
    return hub | _gguf_kwargs(cfg.gguf_file, path)


def _gguf_kwargs(gguf_file: str | None, path: str) -> dict[str, str]:
    """``{"gguf_file": ...}`` for ``from_pretrained``, checked to exist in a local ``path``."""
    if not gguf_file:
        return {}
    if _is_local_path(path) and not os.path.isfile(os.path.join(path, gguf_file)):
        raise FileNotFoundError(
            f"--model.policy.gguf_file: {gguf_file!r} is not a file in {path!r} "
            "(--model.policy.pretrained)"
        )
    return {"gguf_file": gguf_file}


def load_tokenizer(cfg: PolicyConfig) -> PreTrainedTokenizerBase:
    """The tokenizer named by ``cfg.tokenizer`` (or ``cfg.pretrained``), with a pad token.

    Without ``cfg.tokenizer``, a ``cfg.gguf_file`` checkpoint supplies its own tokenizer.
    """
    name = cfg.tokenizer or cfg.pretrained
    assert name is not None  # guaranteed by PolicyConfig.__post_init__
    if name.startswith(BUILTIN_PREFIX):
        tokenizer = _builtin_tokenizer(name)
    else:
        _check_local(name, "--model.policy.tokenizer")
        path = os.path.expanduser(name)
        own = cfg.tokenizer in (None, cfg.pretrained)  # the checkpoint's own tokenizer
        gguf = _gguf_kwargs(cfg.gguf_file if own else None, path)
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **gguf
        )
    if tokenizer.pad_token_id is None:
        # Causal LMs often ship without a pad token; padding is masked, so eos is safe to reuse.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _builtin_tokenizer(name: str) -> PreTrainedTokenizerBase:
    from lit_align.data.synthetic import TASK_TOKENIZER_NAME, build_task_tokenizer

    if name != TASK_TOKENIZER_NAME:
        raise ValueError(
            f"--model.policy.tokenizer: unknown built-in tokenizer {name!r}; "
            f"available: {TASK_TOKENIZER_NAME!r}"
        )
    return build_task_tokenizer()


def build_causal_lm(
    cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase, meta: bool = False
) -> PreTrainedModel:
    """Load ``cfg.pretrained`` or build a new model from ``cfg.architecture`` + ``cfg.config``.

    With ``meta``, ``cfg.pretrained``'s architecture is built on the meta device, without
    weights and without reading the weight files (see :mod:`lit_align.meta_init`).
    """
    dtype = _DTYPES[cfg.dtype]
    if cfg.pretrained is None:
        special = {
            "vocab_size": len(tokenizer),  # a config may pad it (Qwen2.5: 151,936 > tokenizer)
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        config = AutoConfig.for_model(cfg.architecture, **{**special, **cfg.config})
        if config.vocab_size < len(tokenizer):
            raise ValueError(
                f"--model.policy.config.vocab_size={config.vocab_size} is smaller than the "
                f"tokenizer's {len(tokenizer)} tokens"
            )
        if cfg.attn_implementation is not None:
            config._attn_implementation = cfg.attn_implementation
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
    _check_local(cfg.pretrained, "--model.policy.pretrained")
    path = os.path.expanduser(cfg.pretrained)
    hub = _hub_kwargs(cfg, path)
    if meta:
        config = AutoConfig.from_pretrained(path, **hub, **cfg.config)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(
                config,
                dtype=dtype,
                attn_implementation=cfg.attn_implementation,
                trust_remote_code=cfg.trust_remote_code,
            )
    model = AutoModelForCausalLM.from_pretrained(
        path, **hub, attn_implementation=cfg.attn_implementation, dtype=dtype, **cfg.config
    )
    model = _dequantised(model) if cfg.gguf_file else model
    require_finite(model, f"--model.policy.pretrained {path}", "the weight files are damaged")
    return model


def check_vocab(cfg: PolicyConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a tokenizer with more tokens than ``cfg.pretrained``'s embedding rows.

    Reads only the model's config, so it can run before any data is tokenised; otherwise the
    first forward fails with an ``IndexError`` on an out-of-range token id.
    """
    if cfg.pretrained is None:
        return
    _check_local(cfg.pretrained, "--model.policy.pretrained")
    path = os.path.expanduser(cfg.pretrained)
    config = AutoConfig.from_pretrained(path, **_hub_kwargs(cfg, path), **cfg.config)
    vocab = getattr(config.get_text_config(), "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ValueError(
            f"--model.policy.tokenizer {cfg.tokenizer!r} has {len(tokenizer)} tokens, more than "
            f"the {vocab} embedding rows of --model.policy.pretrained {cfg.pretrained!r}: use the "
            "model's own tokenizer (leave --model.policy.tokenizer unset) or one of its size"
        )


def _dequantised(loaded: PreTrainedModel) -> PreTrainedModel:
    """A GGUF-loaded model as an ordinary one.

    transformers dequantises GGUF weights into plain tensors but keeps the model flagged as
    quantised (``config.quantization_config``, ``hf_quantizer``), and ``save_pretrained``
    refuses it ("not serializable"): the architecture is rebuilt from the config without the
    flag and the dequantised state dict is loaded into it.
    """
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(
        config, dtype=loaded.dtype, attn_implementation=config._attn_implementation
    )
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model.eval()  # as from_pretrained returns it
