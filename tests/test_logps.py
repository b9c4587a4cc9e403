"""Chunked response log-probs against the full-logits reference, and against a tiny HF Llama."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from lit_align.logps import chunked_token_logps, naive_response_logps, response_logps

ATOL = 1e-5


def make_case(n=3, t=7, h=8, v=11, dtype=torch.float32, bias=True, seed=0):
    """Random hidden states, lm_head, ids and a response mask over ``n`` rows of length ``t``.

    Row 0: prompt of 2 tokens then response to the end; row 1: prompt 3, response 2, padding;
    rows 2+: no response token. ``M = (t − 2) + 2`` positions are scored.
    """
    torch.manual_seed(seed)
    hidden = torch.randn(n, t, h, dtype=dtype)  # (N, T, H)
    head = nn.Linear(h, v, bias=bias, dtype=dtype)
    input_ids = torch.randint(v, (n, t))  # (N, T)
    mask = torch.zeros(n, t, dtype=torch.bool)  # (N, T)
    mask[0, 2:] = True
    mask[1, 3:5] = True
    return hidden, head, input_ids, mask


def run(fn, hidden, head, input_ids, mask, **kwargs):
    """Output of ``fn`` and the grads of a loss using ``sum`` and ``token_logps``."""
    hidden = hidden.detach().requires_grad_()
    out = fn(hidden, head, input_ids, mask, with_token_logps=True, with_entropy=True, **kwargs)
    gen = torch.Generator().manual_seed(1)
    weights = torch.randn(out.token_logps.shape, generator=gen)  # (N, T)
    loss = (out.sum * torch.arange(1.0, 1 + len(out.sum))).sum() + (out.token_logps * weights).sum()
    params = [p for p in (hidden, *head.parameters()) if p.requires_grad]
    return out, torch.autograd.grad(loss, params)


def assert_same(out, ref, atol=ATOL):
    for name in ("sum", "count", "token_logps", "token_entropy"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=atol, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])  # M = 7: 1, non-divisor, M, > M
def test_values_and_grads_match_naive(chunk_size):
    case = make_case()
    out, grads = run(response_logps, *case, chunk_size=chunk_size)
    ref, ref_grads = run(naive_response_logps, *case)
    assert_same(out, ref)
    assert len(grads) == 3  # hidden, weight, bias
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=ATOL, rtol=0)


def test_token_alignment_and_masking():
    hidden, head, input_ids, mask = make_case()
    out = response_logps(hidden, head, input_ids, mask, with_token_logps=True, with_entropy=True)
    for i, t in mask.nonzero().tolist():
        logp = head(hidden[i, t - 1]).log_softmax(-1)  # (V,) predicts token t
        assert out.token_logps[i, t].item() == pytest.approx(logp[input_ids[i, t]].item(), abs=ATOL)
        entropy = -(logp.exp() * logp).sum()
        assert out.token_entropy[i, t].item() == pytest.approx(entropy.item(), abs=ATOL)
    assert (out.token_logps[~mask] == 0).all() and (out.token_entropy[~mask] == 0).all()
    assert not out.token_entropy.requires_grad
    assert out.count.tolist() == [5.0, 2.0, 0.0]
    assert out.sum[2].item() == 0.0  # row with no response token
    torch.testing.assert_close(out.sum, out.token_logps.sum(1))


def test_response_token_at_position_zero_is_not_scored():
    hidden, head, input_ids, mask = make_case()
    mask[2, :3] = True  # token 0 has no predictor, tokens 1 and 2 are scored
    out = response_logps(hidden, head, input_ids, mask, with_token_logps=True)
    assert out.count[2].item() == 2.0 and out.token_logps[2, 0].item() == 0.0
    assert_same(out, naive_response_logps(hidden, head, input_ids, mask, with_token_logps=True))


def test_empty_selection():
    hidden, head, input_ids, mask = make_case()
    out, grads = run(response_logps, hidden, head, input_ids, torch.zeros_like(mask))
    assert out.sum.tolist() == [0.0] * 3 and out.count.tolist() == [0.0] * 3
    assert all((g == 0).all() for g in grads)
    logps, entropy = chunked_token_logps(
        hidden[0, :0], head.weight, input_ids[0, :0], None, 4, True
    )
    assert logps.shape == entropy.shape == (0,) and logps.dtype == torch.float32


@pytest.mark.parametrize("trainable", ["hidden", "head"])
def test_partial_requires_grad(trainable):
    hidden, head, input_ids, mask = make_case()
    head.requires_grad_(trainable == "head")
    hidden = hidden.requires_grad_(trainable == "hidden")
    params = [hidden] if trainable == "hidden" else list(head.parameters())
    grads = []
    for fn in (response_logps, naive_response_logps):
        grads.append(torch.autograd.grad(fn(hidden, head, input_ids, mask).sum.sum(), params))
    for grad, ref_grad in zip(*grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=ATOL, rtol=0)


def test_no_grad_reference_path():
    hidden, head, input_ids, mask = make_case()
    with torch.no_grad():
        out = response_logps(hidden, head, input_ids, mask, chunk_size=2, with_token_logps=True)
    assert not out.sum.requires_grad
    ref = naive_response_logps(hidden, head, input_ids, mask, with_token_logps=True)
    torch.testing.assert_close(out.token_logps, ref.token_logps.detach(), atol=ATOL, rtol=0)


def test_bf16_inputs_give_float32_close_to_fp32():
    case = make_case(h=32, v=64)
    out, grads = run(response_logps, *case, chunk_size=3)
    hidden, head, input_ids, mask = case
    bf16_case = (hidden.bfloat16(), head.bfloat16(), input_ids, mask)
    out16, grads16 = run(response_logps, *bf16_case, chunk_size=3)
    assert out16.sum.dtype == out16.token_logps.dtype == torch.float32
    assert_same(out16, out, atol=0.1)
    for grad16, grad in zip(grads16, grads, strict=True):
        assert grad16.dtype == torch.bfloat16
        torch.testing.assert_close(grad16.float(), grad, atol=0.05, rtol=0.05)


def test_autocast_matches_naive_under_autocast():
    case = make_case(h=32, v=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = run(response_logps, *case, chunk_size=3)
        ref, ref_grads = run(naive_response_logps, *case)
    assert_same(out, ref)  # same bf16 logits, both upcast before the softmax
    assert all(grad.dtype == torch.float32 for grad in grads)
    # Backward recomputes the same bf16 logits, so the hidden grads agree closely; the weight and
    # bias grads differ by bf16 rounding (accumulated in float32 here, rounded to bf16 there).
    torch.testing.assert_close(grads[0], ref_grads[0], atol=1e-4, rtol=0)
    for grad, ref_grad in zip(grads[1:], ref_grads[1:], strict=True):
        torch.testing.assert_close(grad, ref_grad, atol=0.05, rtol=0.01)


def test_gradcheck_float64():
    torch.manual_seed(0)
    hidden = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(4, (5,))

    def logps(h, w, b):
        return chunked_token_logps(h, w, targets, b, chunk_size=2)[0]

    assert torch.autograd.gradcheck(logps, (hidden, weight, bias))


class _LargestTensor(TorchDispatchMode):
    """Records the most elements of any tensor an op produces (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, Tensor):
            self.numel = max(self.numel, out.numel())
        return out


@pytest.mark.parametrize("fn", [response_logps, naive_response_logps])
def test_no_m_by_v_tensor_saved_or_created(fn):
    hidden, head, input_ids, mask = make_case(n=2, t=16, h=4, v=256)
    mask[:] = True  # M = 2 · 15 = 30 scored positions; M·V exceeds every input's size
    m_times_v = 30 * 256
    saved = []

    def record(x: Tensor) -> Tensor:
        saved.append(x.numel())
        return x

    hidden.requires_grad_()
    with _LargestTensor() as largest:
        with torch.autograd.graph.saved_tensors_hooks(record, lambda x: x):
            out = fn(hidden, head, input_ids, mask, chunk_size=4)
        out.sum.sum().backward()
    assert saved  # the hooks saw the graph's saved tensors
    big = max(saved) >= m_times_v or largest.numel >= m_times_v
    assert big == (fn is naive_response_logps)  # the check fails for the naive path


def test_bad_arguments():
    hidden, head, input_ids, mask = make_case()
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        response_logps(hidden, head, input_ids, mask, chunk_size=0)
    with pytest.raises(ValueError, match=r"response_mask \(N, T\); got \(3, 7, 8\)"):
        response_logps(hidden, head, input_ids, mask[:, :-1])


def test_matches_tiny_hf_llama():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    input_ids = torch.randint(64, (2, 10))  # (N, T)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0  # right padding
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, 4:] = True
    mask[1, 3:7] = True
    with torch.no_grad():
        hidden = model.get_decoder()(input_ids, attention_mask).last_hidden_state  # (N, T, H)
        out = response_logps(hidden, model.get_output_embeddings(), input_ids, mask, chunk_size=3)
        logp = model(input_ids, attention_mask=attention_mask).logits.log_softmax(-1)
    # Token t of row i is scored by the logits at position t - 1.
    expected = [
        sum(logp[i, t - 1, token] for t, token in enumerate(input_ids[i]) if mask[i, t])
        for i in (0, 1)
    ]
    torch.testing.assert_close(out.sum, torch.stack(expected), atol=ATOL, rtol=0)
    assert out.count.tolist() == [6.0, 4.0]
