"""Padding-free packing: the layout, log-probs equal to the padded path, token-budget batches."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.packing import PackedBatch, TokenBudgetSampler, compose, pack
from lit_align.data.synthetic import make_rows
from lit_align.lightning_cli import run_lightning_cli
from lit_align.logps import selected_logps
from lit_align.losses import BNF, DPO
from lit_align.module import AlignmentModule
from lit_align.types import PreferenceBatch

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def _batch(tokenizer, n: int = 5) -> PreferenceBatch:
    rows = [tokenize_row(r, tokenizer, Truncation(64)) for r in make_rows(n, seed=3)]
    return PreferenceCollator(tokenizer.pad_token_id)(rows)


def test_pack_layout_by_hand():
    """Two rows, lengths 3 and 2; responses at columns 1–2 and 1: hand-checked indices."""
    batch = PreferenceBatch(
        input_ids=torch.tensor([[5, 6, 7], [8, 9, 0]]),
        attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
        response_mask=torch.tensor([[False, True, True], [False, True, False]]),
    )
    packed = pack(batch).packed
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    # packed positions 0, 1 predict tokens 6, 7 of row 0; position 3 predicts token 9 of row 1
    assert packed.source.tolist() == [0, 1, 3]
    assert packed.rows.tolist() == [0, 0, 1] and packed.cols.tolist() == [1, 2, 1]
    assert packed.cu_seqlens.tolist() == [0, 3, 5] and packed.max_seqlen == 3
    with pytest.raises(ValueError, match="right-padded"):
        pack(PreferenceBatch(batch.input_ids, batch.attention_mask.flip(1), batch.response_mask))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_packed_logps_and_grads_match_padded(tiny_policy, arch):
    """Sums, per-token log-probs, entropies and gradients equal the padded path's (1e-5)."""
    torch.manual_seed(0)
    policy = dataclasses.replace(tiny_policy, architecture=arch)
    module = AlignmentModule(policy=policy, loss=BNF())
    module.configure_model()
    batch = _batch(module.tokenizer)
    packed = pack(batch)
    assert packed.packed.input_ids.shape[1] == int(batch.attention_mask.sum())  # no padding
    outs, grads = [], []
    for b in (batch, packed):
        out = module.policy(b, with_token_logps=True, with_entropy=True)
        (out.sum.sum() + out.token_logps.square().sum()).backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in module.policy.parameters()])
        module.policy.zero_grad()
    for name in ("sum", "count", "token_logps", "token_entropy"):
        torch.testing.assert_close(
            getattr(outs[1], name), getattr(outs[0], name), atol=1e-5, rtol=0
        )
    for g_packed, g_padded in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_packed, g_padded, atol=1e-5, rtol=1e-4)
    # the loss sees the same chosen/rejected layout: identical DPO losses
    module.loss = DPO(beta=0.1)
    torch.testing.assert_close(module(packed)[0].loss, module(batch)[0].loss, atol=1e-6, rtol=0)


def test_token_budget_batches_cover_every_row_once():
    tokens = [
        int(t) for t in torch.randint(10, 100, (300,), generator=torch.Generator().manual_seed(0))
    ]
    batches = compose(tokens, 400, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(300))
    assert all(sum(tokens[i] for i in b) <= 400 for b in batches)
    fill = sum(tokens) / (400 * len(batches))
    assert fill > 0.9, fill  # length-sorted windows leave little of the budget unused
    in_order = compose(tokens, 400, seed=None)
    assert [i for b in in_order for i in b] == list(range(300))


def test_sampler_deals_equal_batches_to_ranks_and_resumes():
    tokens = [(7 * i) % 50 + 5 for i in range(101)]
    ranks = [TokenBudgetSampler(tokens, 120, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) > 0
    for epoch in (0, 1):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        seen = [i for s in ranks for batch in s for i in batch]
        assert set(seen) == set(range(101))  # every row, padded by repeating batches
    first = list(ranks[0])
    ranks[0].start_batch = 2
    assert list(ranks[0]) == first[2:]
    with pytest.raises(ValueError, match="--data.max_tokens_per_batch=50 is smaller"):
        TokenBudgetSampler(tokens, 50)


def test_datamodule_requires_a_budget():
    with pytest.raises(ValueError, match="--data.packing needs --data.max_tokens_per_batch"):
        PreferenceDataModule(packing=True)


def test_packed_batches_from_the_datamodule(tmp_path):
    data = PreferenceDataModule(
        tokenizer="builtin:sort", builtin_rows=40, max_length=48, packing=True,
        max_tokens_per_batch=300, cache_dir=str(tmp_path),
    )  # fmt: skip
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert all(isinstance(b, PackedBatch) for b in batches)
    assert all(b.packed.input_ids.shape[1] <= 300 for b in batches)
    assert sum(b.num_examples for b in batches) == 40
    assert isinstance(next(iter(data.val_dataloader())), PackedBatch)


def test_cli_fit_with_packing_and_precomputed_reference(tmp_path):
    """The flags wire through: a few packed DPO steps with cached reference log-probs."""
    cli = run_lightning_cli(
        [
            "fit",
            "--model.policy.tokenizer=builtin:sort",
            "--model.policy.config={hidden_size: 32, intermediate_size: 64, "
            "num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2}",
            "--model.reference=precomputed",
            "--data.builtin_rows=48",
            "--data.max_length=48",
            "--data.packing=true",
            "--data.max_tokens_per_batch=400",
            f"--data.cache_dir={tmp_path}",
            "--trainer.max_steps=3",
            "--trainer.limit_val_batches=2",
            "--trainer.val_check_interval=3",
            "--trainer.logger=false",
            "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.trainer.global_step == 3 and cli.model.reference is None
    assert torch.isfinite(cli.trainer.callback_metrics["val_loss"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_scoring_and_loss_do_not_sync_the_host(tiny_policy):
    """Selection, lm_head chunks and the DPO loss on a packed batch never wait for the GPU.

    (The decoder is left out: Transformers' packed-sequence detection syncs once per forward.)
    """
    torch.manual_seed(0)
    module = AlignmentModule(policy=tiny_policy, loss=DPO(beta=0.1))
    module.configure_model()
    module.to("cuda")
    batch = pack(_batch(module.tokenizer)).to("cuda")
    p = batch.packed
    hidden = torch.randn(p.input_ids.shape[1], 32, device="cuda", requires_grad=True)  # (L, H)
    head = module.policy.model.get_output_embeddings()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        selected = (hidden[p.source], p.input_ids[0, p.source + 1], p.rows, p.cols)
        logps = selected_logps(
            *selected, head, batch.response_mask, chunk_size=16, with_token_logps=True,
            with_entropy=False,
        )  # fmt: skip
        out = module.loss(logps, logps.detach(), batch)
        out.loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out.loss.detach().cpu())


def test_bench_runs_the_new_modes(tmp_path):
    """``scripts/bench.py`` with packing, a precomputed reference and the batch-size search."""
    out = tmp_path / "bench.json"
    small = ["--shape", "tiny", "--prompt-len", "8", "16", "--response-len", "8", "16"]
    modes = ["--packing", "--reference", "precomputed", "--find-max-batch", "--search-limit", "4"]
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    command = [sys.executable, str(script), *small, "--max-length", "32", *modes]
    subprocess.run([*command, "--json", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["search"] == "batch_size" and result["largest"]["batch_size"] == 4
    run = result["largest"]["result"]
    assert run["packing"] and run["reference"] == "precomputed" and run["tokens_per_s"] > 0
