"""``--model.compile``: compiled decoder layers match eager ones; AdamW goes fused on CUDA only.

The compile test runs TorchInductor on the CPU (it needs a C++ compiler; it is skipped with the
reason when none is found). It compiles one layer graph with gradients, about 20 s on 2 cores
the first time; Inductor's on-disk cache makes later runs faster.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.synthetic import make_rows
from lit_align.losses import SimPO
from lit_align.module import AlignmentModule, _prefer_fused

NO_COMPILER = shutil.which("g++") is None and shutil.which("clang++") is None


def _step(module: AlignmentModule, batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    out, _ = module(batch)
    out.loss.backward()
    grads = [p.grad.clone() for p in module.policy.parameters()]
    module.policy.zero_grad()
    return out.loss.detach(), grads


@pytest.mark.skipif(NO_COMPILER, reason="TorchInductor on CPU needs a C++ compiler (g++/clang++)")
def test_compiled_layers_match_eager_with_activation_checkpointing(tiny_policy):
    modules = []
    for compile in (False, True):
        torch.manual_seed(0)
        module = AlignmentModule(
            policy=tiny_policy, loss=SimPO(), activation_checkpointing=True, compile=compile
        )
        module.configure_model()
        modules.append(module)
    layer = modules[1].policy.blocks()[0]
    assert layer._compiled_call_impl is not None  # compiled in place: FSDP2 still finds it
    tok = modules[0].tokenizer
    rows = [tokenize_row(r, tok, Truncation(64)) for r in make_rows(4, seed=3)]
    batch = PreferenceCollator(tok.pad_token_id)(rows)
    (eager_loss, eager_grads), (loss, grads) = (_step(m, batch) for m in modules)
    torch.testing.assert_close(loss, eager_loss, atol=1e-5, rtol=1e-5)
    for grad, expected in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)


def test_adamw_becomes_fused_on_cuda_only_when_unset():
    params = [torch.nn.Parameter(torch.randn(4))]
    plain = torch.optim.AdamW(params, lr=0.1, weight_decay=0.0)
    fused = _prefer_fused(plain, params, torch.device("cuda"))
    assert fused is not plain and fused.defaults["fused"] is True
    assert fused.defaults["lr"] == 0.1 and fused.defaults["weight_decay"] == 0.0
    assert _prefer_fused(plain, params, torch.device("cpu")) is plain
    chosen = torch.optim.AdamW(params, foreach=False)
    assert _prefer_fused(chosen, params, torch.device("cuda")) is chosen  # the user's choice
    sgd = torch.optim.SGD(params, lr=0.1)
    assert _prefer_fused(sgd, params, torch.device("cuda")) is sgd
