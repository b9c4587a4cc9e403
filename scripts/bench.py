"""Training-step throughput and memory of lit_align on a named model shape (random weights).

Builds the model through lit_align's own path (``AlignmentModule.configure_model``), feeds
synthetic pairs with the lengths given, runs ``--warmup`` untimed and ``--steps`` timed
optimizer steps (forward of chosen+rejected, reference forward when the loss needs one,
backward, AdamW), and prints tokens/s, pairs/s, MFU and peak memory (``--json`` for a file).

Tokens counted: non-pad tokens of prompt+chosen and prompt+rejected (as in the peers' numbers).
MFU = tokens/s × FLOPs/token / peak FLOP/s, with FLOPs/token = 2·N per forward and 4·N per
backward of the policy (6·N), plus 2·N for an on-the-fly reference forward; N counts every
matmul weight once (embeddings excluded, lm_head included, so a tied matrix counts once);
attention score FLOPs are left out, so MFU is slightly understated at long lengths.

Examples::

    python scripts/bench.py --shape tiny --steps 3                 # CPU smoke test
    python scripts/bench.py --shape qwen2.5-0.5b --batch-size 4 --dtype bfloat16 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch

import lit_align.models
from lit_align.logps import naive_response_logps
from lit_align.losses import DPO, SimPO
from lit_align.models import PolicyConfig
from lit_align.module import AlignmentModule
from lit_align.types import PreferenceBatch

QWEN_VOCAB = 151_936
SHAPES = {
    "tiny": {
        "architecture": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
    },
    # the tiny body with Qwen's vocabulary: shows the lm_head/logits memory on a CPU
    "tiny-qwen-vocab": {
        "architecture": "qwen2",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": QWEN_VOCAB,
    },
    "qwen2.5-0.5b": {
        "architecture": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": QWEN_VOCAB,
        "tie_word_embeddings": True,
    },
    "qwen2.5-1.5b": {
        "architecture": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": QWEN_VOCAB,
        "tie_word_embeddings": True,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per step")
    p.add_argument("--prompt-len", type=int, nargs=2, default=(128, 384), metavar=("MIN", "MAX"))
    p.add_argument("--response-len", type=int, nargs=2, default=(128, 640), metavar=("MIN", "MAX"))
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument(
        "--loss",
        choices=("DPO", "SimPO"),
        default="DPO",
        help="DPO runs a reference model on the fly; SimPO needs none",
    )
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument(
        "--logps",
        choices=("chunked", "naive"),
        default="chunked",
        help="naive materialises the full [N, T, V] logits (the 'before' baseline)",
    )
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=798.0,
        help="peak FLOP/s for MFU (default: measured H100 bf16 dense)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        p.error("--steps and --batch-size must be >= 1 and --warmup >= 0")
    if args.prompt_len[1] + args.response_len[1] > args.max_length:
        p.error("--prompt-len MAX + --response-len MAX must be <= --max-length")
    return args


def synthetic_batch(args, vocab: int, gen: torch.Generator) -> PreferenceBatch:
    """``batch_size`` random pairs with uniformly drawn prompt and response lengths."""

    def draw(lo_hi):
        return int(torch.randint(lo_hi[0], lo_hi[1] + 1, (1,), generator=gen))

    b = args.batch_size
    prompts = [draw(args.prompt_len) for _ in range(b)]
    lengths = prompts + prompts
    responses = [draw(args.response_len) for _ in range(2 * b)]
    width = max(p + r for p, r in zip(lengths, responses))
    ids = torch.randint(3, vocab, (2 * b, width), generator=gen)
    attention = torch.zeros(2 * b, width, dtype=torch.long)
    response = torch.zeros(2 * b, width, dtype=torch.bool)
    for i, (p, r) in enumerate(zip(lengths, responses)):
        attention[i, : p + r] = 1
        response[i, p : p + r] = True
    return PreferenceBatch(ids * attention, attention, response)


def build(args, device: torch.device) -> AlignmentModule:
    shape = dict(SHAPES[args.shape])
    arch = shape.pop("architecture")
    policy = PolicyConfig(
        tokenizer="builtin:sort", architecture=arch, config=shape, dtype=args.dtype
    )
    loss = DPO(beta=0.1) if args.loss == "DPO" else SimPO()
    module = AlignmentModule(
        policy=policy,
        loss=loss,
        logps_chunk_size=args.chunk_size,
        activation_checkpointing=args.activation_checkpointing,
    )
    module.configure_model()
    return module.to(device)


def matmul_params(model: torch.nn.Module) -> int:
    """Weights that take part in matmuls: all but the input embedding (a tied lm_head counts)."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() for p in model.parameters() if p is not embedding)
    return total + (head.numel() if head is embedding else 0)


def run(args) -> dict:
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.logps == "naive":
        lit_align.models.response_logps = naive_response_logps
    module = build(args, device)
    optimizer = torch.optim.AdamW(module.policy.parameters(), lr=1e-6, fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    vocab = module.policy.model.config.vocab_size
    batches = [synthetic_batch(args, vocab, gen) for _ in range(args.warmup + args.steps)]
    tokens = 0
    for i, batch in enumerate(batches):
        if i == args.warmup:
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        out, _ = module(batch.to(device))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= args.warmup:
            tokens += int(batch.attention_mask.sum())
    _sync(device)
    seconds = time.perf_counter() - start
    n = matmul_params(module.policy.model)
    flops_per_token = (6 + (2 if module.reference is not None else 0)) * n
    tps = tokens / seconds
    return {
        "shape": args.shape,
        "loss": args.loss,
        "dtype": args.dtype,
        "logps": args.logps,
        "batch_size": args.batch_size,
        "activation_checkpointing": args.activation_checkpointing,
        "device": _device_name(device),
        "torch": torch.__version__,
        "steps": args.steps,
        "seconds": seconds,
        "step_time_s": seconds / args.steps,
        "tokens_per_s": tps,
        "pairs_per_s": args.batch_size * args.steps / seconds,
        "matmul_params": n,
        "mfu": tps * flops_per_token / (args.peak_tflops * 1e12),
        "peak_memory_gib": _peak_memory_gib(device),
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(" ".join(sys.argv))
    for key, value in result.items():
        print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
