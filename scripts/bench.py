"""Training-step throughput and memory of lit_align on a named model shape (random weights) or
a pretrained model directory (``--pretrained DIR``, e.g. SmolLM2 from ``lit-align real-model``).

Builds the model through lit_align's own path (``AlignmentModule.configure_model``), feeds
synthetic pairs with the lengths given through the real collators (padded, or packed with
``--packing``), runs ``--warmup`` untimed and ``--steps`` timed optimizer steps (forward of
chosen+rejected, reference forward when the loss needs one unless ``--reference precomputed``,
backward, AdamW), and prints tokens/s, pairs/s, MFU and peak memory (``--json`` for a file).

``--reference precomputed`` scores the batches with the frozen reference before timing and
frees it (what ``--model.reference precomputed`` does before training); ``--compile`` compiles
each decoder layer (keep ``--warmup`` ≥ 2: the first steps compile). ``--find-max-batch`` doubles
``--batch-size`` and ``--find-max-length`` doubles the sequence length at batch 1, one step
each, until CUDA runs out of memory or ``--search-limit``; they report the largest that ran.

Tokens counted: non-pad tokens of prompt+chosen and prompt+rejected (as in the peers' numbers).
On a CPU shared with other jobs, wall time measures the neighbours too: ``cpu_seconds`` and
``tokens_per_cpu_s`` count this process's CPU time instead (equal to wall time on idle cores
with ``OMP_NUM_THREADS=1``).

MFU = tokens/s × FLOPs/token / peak FLOP/s, with FLOPs/token = 2·N per forward and 4·N per
backward of the policy (6·N), plus 2·N for an on-the-fly reference forward; N counts every
matmul weight once (embeddings excluded, lm_head included, so a tied matrix counts once);
attention score FLOPs are left out, so MFU is slightly understated at long lengths.

Examples::

    python scripts/bench.py --shape tiny --steps 3                 # CPU smoke test
    python scripts/bench.py --pretrained "$(lit-align real-model)" --batch-size 2 \
        --prompt-len 32 64 --response-len 32 96 --max-length 160      # SmolLM2-135M on CPU
    python scripts/bench.py --shape qwen2.5-0.5b --batch-size 4 --dtype bfloat16 --json out.json
    python scripts/bench.py --shape qwen2.5-0.5b --dtype bfloat16 --reference precomputed \
        --packing --compile --find-max-batch
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import resource
import sys
import time

import torch

import lit_align.models
from lit_align.data.collate import PreferenceCollator
from lit_align.data.packing import pack
from lit_align.logps import naive_response_logps
from lit_align.losses import DPO, SimPO
from lit_align.models import PolicyConfig
from lit_align.module import AlignmentModule
from lit_align.types import PreferenceBatch

QWEN_VOCAB = 151_936


def _shape(arch: str, hidden: int, inter: int, layers: int, heads: int, vocab: int, **extra):
    """A model shape: ``architecture`` plus the config overrides (2 key-value heads)."""
    sizes = {"hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers}
    heads = {"num_attention_heads": heads, "num_key_value_heads": 2, "vocab_size": vocab}
    return {"architecture": arch, **sizes, **heads, **extra}


SHAPES = {
    "tiny": _shape("llama", 64, 128, 2, 4, 512),
    # the tiny body with Qwen's vocabulary: shows the lm_head/logits memory on a CPU
    "tiny-qwen-vocab": _shape("qwen2", 64, 128, 2, 4, QWEN_VOCAB),
    "qwen2.5-0.5b": _shape("qwen2", 896, 4864, 24, 14, QWEN_VOCAB, tie_word_embeddings=True),
    "qwen2.5-1.5b": _shape("qwen2", 1536, 8960, 28, 12, QWEN_VOCAB, tie_word_embeddings=True),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument(
        "--pretrained",
        metavar="DIR",
        help="a Hugging Face model directory or hub id to load instead of --shape",
    )
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
    p.add_argument(
        "--reference",
        choices=("model", "precomputed"),
        default="model",
        help="precomputed: reference log-probs scored before timing, reference model freed",
    )
    p.add_argument("--packing", action="store_true", help="padding-free packed batches")
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    p.add_argument("--attn", default="sdpa", help="attention backend (flash_attention_2, ...)")
    search = p.add_mutually_exclusive_group()
    search.add_argument("--find-max-batch", action="store_true")
    search.add_argument("--find-max-length", action="store_true")
    p.add_argument("--search-limit", type=int, default=1024, help="largest batch/length tried")
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
    if args.packing and args.logps == "naive":
        p.error("--packing scores the packed row with the chunked log-probs; drop --logps naive")
    return args


def synthetic_batch(args, vocab: int, gen: torch.Generator) -> PreferenceBatch:
    """``batch_size`` random pairs with uniformly drawn prompt and response lengths, collated
    like training data (right-padded, or packed with ``--packing``)."""

    def ids(lo_hi):
        length = int(torch.randint(lo_hi[0], lo_hi[1] + 1, (1,), generator=gen))
        return torch.randint(3, vocab, (length,), generator=gen).tolist()

    rows = [
        {"prompt_ids": ids(args.prompt_len), "chosen_ids": ids(args.response_len)}
        | {"rejected_ids": ids(args.response_len)}
        for _ in range(args.batch_size)
    ]
    batch = PreferenceCollator(pad_token_id=0)(rows)
    return pack(batch) if args.packing else batch


def policy_config(args) -> PolicyConfig:
    """``--pretrained`` loaded as lit_align loads it, or a new model of ``--shape``."""
    common = {"dtype": args.dtype, "attn_implementation": args.attn}
    if args.pretrained:
        return PolicyConfig(pretrained=args.pretrained, **common)
    shape = dict(SHAPES[args.shape])
    arch = shape.pop("architecture")
    return PolicyConfig(tokenizer="builtin:sort", architecture=arch, config=shape, **common)


def build(args, device: torch.device) -> AlignmentModule:
    policy = policy_config(args)
    loss = DPO(beta=0.1) if args.loss == "DPO" else SimPO()
    module = AlignmentModule(
        policy=policy,
        loss=loss,
        logps_chunk_size=args.chunk_size,
        activation_checkpointing=args.activation_checkpointing,
        compile=args.compile,
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
    if args.reference == "precomputed" and module.reference is not None:
        batches = [_with_reference(module, b, device) for b in batches]
        module._reference = []  # freed, as --model.reference precomputed does
    tokens = cells = 0
    for i, batch in enumerate(batches):
        if i == args.warmup:
            _sync(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            start, cpu_start = time.perf_counter(), time.process_time()
        out, _ = module(batch.to(device))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= args.warmup:
            tokens += int(batch.attention_mask.sum())
            cells += batch.attention_mask.numel()  # what the padded layout computes
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    n = matmul_params(module.policy.model)
    flops_per_token = (6 + (2 if module.reference is not None else 0)) * n
    tps = tokens / seconds
    return {
        "shape": f"pretrained {args.pretrained}" if args.pretrained else args.shape,
        "loss": args.loss,
        "dtype": args.dtype,
        "logps": args.logps,
        "batch_size": args.batch_size,
        "activation_checkpointing": args.activation_checkpointing,
        "reference": args.reference if module.loss.requires_reference else "none",
        "packing": args.packing,
        "compile": args.compile,
        "attn": args.attn,
        "device": _device_name(device),
        "torch": torch.__version__,
        "steps": args.steps,
        "seconds": seconds,
        "step_time_s": seconds / args.steps,
        "tokens_per_s": tps,
        "pairs_per_s": args.batch_size * args.steps / seconds,
        # CPU time of this process (all its threads): what a step costs on a shared machine
        "cpu_seconds": cpu_seconds,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "padding_fraction": 1 - tokens / cells,  # of a padded batch; packing computes none
        "matmul_params": n,
        "mfu": tps * flops_per_token / (args.peak_tflops * 1e12),
        "peak_memory_gib": _peak_memory_gib(device),
    }


def _with_reference(module: AlignmentModule, batch: PreferenceBatch, device) -> PreferenceBatch:
    """``batch`` with its reference log-probs (scored by the frozen reference, kept on the CPU)."""
    with torch.no_grad():
        logps = module.reference(batch.to(device), module.loss.needs_token_logps, False)
    return dataclasses.replace(batch, reference_logps=logps.to("cpu"))


def find_max(args, key: str) -> dict:
    """Double ``args.<key>`` (``batch_size``, or the length at batch 1) from its start until a
    step runs out of CUDA memory or passes ``--search-limit``; the largest value that ran."""
    value, best = getattr(args, key) if key == "batch_size" else 64, None
    while value <= args.search_limit:
        trial = argparse.Namespace(**{**vars(args), "warmup": 0, "steps": 1, key: value})
        if key == "max_length":
            trial.batch_size, half = 1, value // 2
            trial.prompt_len, trial.response_len = (half, half), (value - half, value - half)
        try:
            best = {key: value, "result": run(trial)}
        except torch.OutOfMemoryError:
            break
        finally:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        value *= 2
    return {"search": key, "limit": args.search_limit, "largest": best}


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
    if args.find_max_batch or args.find_max_length:
        result = find_max(args, "batch_size" if args.find_max_batch else "max_length")
        largest = result["largest"] or {}
        print(f"largest {result['search']} that ran: {largest.get(result['search'])}")
        shown = largest.get("result", {})
    else:
        result = shown = run(args)
    print(" ".join(sys.argv))
    for key, value in shown.items():
        print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
