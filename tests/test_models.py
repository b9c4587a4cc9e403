"""Any Hugging Face causal LM: blocks found, scorer exact, sharded and meta-initialised on 1 rank.

Tiny Llama, Qwen2 (tied embeddings), Mistral, Gemma, Gemma 2 (final-logit soft-capping) and
Gemma 3 models are built from a config and saved locally. One-rank FSDP2 runs on a gloo process
group of world size 1 in this process (created and destroyed by the ``mesh`` fixture).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import tiny
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.synthetic import make_rows
from lit_align.distributed import FSDP2Strategy, shard_scorer
from lit_align.logps import naive_response_logps
from lit_align.meta_init import load_sharded, meta_init_enabled, recompute_buffers
from lit_align.models import PolicyConfig, build_causal_lm, load_tokenizer
from lit_align.scorer import CausalLMScorer, decoder_layers

TINY = {**tiny.TINY, "head_dim": 8, "max_position_embeddings": 128}
# (model_type, config overrides, attention backend); Gemma 2 has no sdpa path in transformers 5.
ARCHITECTURES = [
    ("llama", {}, "sdpa"),
    ("qwen2", {"tie_word_embeddings": True}, "sdpa"),
    ("mistral", {"sliding_window": 8}, "sdpa"),
    ("gemma", {}, "sdpa"),
    ("gemma2", {"final_logit_softcapping": 3.0, "sliding_window": 8}, "eager"),
    ("gemma3_text", {"sliding_window": 8}, "sdpa"),
]
IDS = [arch for arch, _, _ in ARCHITECTURES]


@pytest.fixture(scope="module")
def mesh():
    """A 1-rank data-parallel mesh (gloo, in this process)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _saved(tmp_path, arch: str, overrides: dict, attn: str) -> PolicyConfig:
    """Save a random tiny ``arch`` model; the config that loads it back."""
    torch.manual_seed(0)
    new = PolicyConfig(
        architecture=arch,
        tokenizer="builtin:sort",
        config={**TINY, **overrides},
        attn_implementation=attn,
    )
    model = build_causal_lm(new, load_tokenizer(new))
    with torch.no_grad():  # non-trivial norms (Gemma's start at 0, the others at 1)
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path / arch)
    return PolicyConfig(
        pretrained=str(tmp_path / arch), tokenizer="builtin:sort", attn_implementation=attn
    )


def _batch(tokenizer):
    rows = [tokenize_row(r, tokenizer, Truncation(64)) for r in make_rows(3, seed=1)]
    return PreferenceCollator(tokenizer.pad_token_id)(rows)


def _full_logits(model, batch) -> torch.Tensor:
    return model(batch.input_ids, attention_mask=batch.attention_mask).logits  # (N, T, V)


@pytest.mark.parametrize(("arch", "overrides", "attn"), ARCHITECTURES, ids=IDS)
def test_scorer_matches_full_logits_unsharded_and_sharded(tmp_path, mesh, arch, overrides, attn):
    """Blocks found from ``_no_split_modules``; log-probs equal log_softmax of the HF logits."""
    cfg = _saved(tmp_path, arch, overrides, attn)
    tokenizer = load_tokenizer(cfg)
    model = build_causal_lm(cfg, tokenizer).eval()
    blocks = decoder_layers(model)
    assert len(blocks) == TINY["num_hidden_layers"]
    assert type(blocks[0]).__name__ in model._no_split_modules
    batch = _batch(tokenizer)
    with torch.no_grad():
        hf_logits = _full_logits(model, batch)
        expected = naive_response_logps(
            hf_logits, nn.Identity(), batch.input_ids, batch.response_mask, with_token_logps=True
        )
        scorer = CausalLMScorer(model, chunk_size=5)
        unsharded = scorer(batch, with_token_logps=True)
        shard_scorer(scorer, mesh)
        sharded = scorer(batch, with_token_logps=True)
    assert all(isinstance(p, DTensor) for p in scorer.parameters())
    for got in (unsharded, sharded):
        assert torch.allclose(got.token_logps, expected.token_logps, atol=1e-5), arch
        assert torch.allclose(got.sum, expected.sum, atol=1e-5), arch


@pytest.mark.parametrize(("arch", "overrides", "attn"), ARCHITECTURES, ids=IDS)
def test_meta_init_equals_from_pretrained(tmp_path, mesh, arch, overrides, attn):
    """Meta build → shard → to_empty → rank-0 load + broadcast → buffers: identical logits."""
    cfg = _saved(tmp_path, arch, overrides, attn)
    tokenizer = load_tokenizer(cfg)
    plain = build_causal_lm(cfg, tokenizer).eval()
    meta = build_causal_lm(cfg, tokenizer, meta=True)
    assert all(t.is_meta for t in (*meta.parameters(), *meta.buffers()))
    scorer = shard_scorer(CausalLMScorer(meta), mesh)
    load_sharded(cfg, tokenizer, [scorer], torch.device("cpu"))
    scorer.eval()
    batch = _batch(tokenizer)
    with torch.no_grad():
        want = _full_logits(plain, batch)
        scorer.unshard()  # the root's parameters, as its forward would gather them
        got = _full_logits(scorer.model, batch)
        scorer.reshard()
    diff = (got - want).abs().max().item()
    assert diff <= 1e-6, f"{arch}: max |dlogit| {diff:.2e}"
    for name, buffer in plain.named_buffers():  # inv_freq, original_inv_freq, embed_scale, ...
        assert torch.equal(meta.get_buffer(name), buffer), name


def test_recompute_buffers_restores_rotary_and_rejects_what_it_cannot(tmp_path):
    cfg = PolicyConfig(tokenizer="builtin:sort", config=dict(TINY))
    model = build_causal_lm(cfg, load_tokenizer(cfg))
    rotary = model.model.rotary_emb
    expected = rotary.inv_freq.clone()
    rotary.inv_freq.fill_(123.0)  # what uninitialised memory might hold
    recompute_buffers(model)
    assert torch.equal(rotary.inv_freq, expected)
    model.model.norm.register_buffer("table", torch.ones(3), persistent=False)
    with pytest.raises(ValueError, match=r"\['table'\] of LlamaRMSNorm .*meta_init=false"):
        recompute_buffers(model)


class Custom(nn.Module):
    """A model that declares no ``_no_split_modules``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.stack = nn.ModuleList([nn.Linear(8, 8) for _ in range(2)])


def test_unsupported_model_names_the_override(mesh):
    model = Custom()
    with pytest.raises(ValueError, match=r"Set --model.policy.decoder_layers to the dotted path"):
        decoder_layers(model)
    with pytest.raises(ValueError, match=r"decoder_layers='embed': expected a non-empty nn.Mod"):
        decoder_layers(model, "embed")
    with pytest.raises(ValueError, match=r"decoder_layers='nope'.*found nothing"):
        decoder_layers(model, "nope")
    assert decoder_layers(model, "stack") is model.stack
    scorer = shard_scorer(CausalLMScorer(model, layers_path="stack"), mesh)
    assert all(isinstance(p, DTensor) for p in scorer.parameters())


def test_meta_init_is_auto_for_sharded_pretrained_models():
    fsdp2 = SimpleNamespace(strategy=FSDP2Strategy())
    pretrained = PolicyConfig(pretrained="org/model")
    assert meta_init_enabled(pretrained, fsdp2)
    assert not meta_init_enabled(pretrained, SimpleNamespace(strategy=DDPStrategy()))
    assert not meta_init_enabled(pretrained, None)
    assert not meta_init_enabled(PolicyConfig(tokenizer="builtin:sort"), fsdp2)
    assert not meta_init_enabled(PolicyConfig(pretrained="org/model", meta_init=False), fsdp2)
    with pytest.raises(ValueError, match=r"meta_init=true needs --trainer.strategy=FSDP2"):
        meta_init_enabled(PolicyConfig(pretrained="org/model", meta_init=True), None)
    with pytest.raises(ValueError, match=r"meta_init=true needs --model.policy.pretrained"):
        PolicyConfig(tokenizer="builtin:sort", meta_init=True)
