"""``lit-align eval``: judge an aligned policy against a baseline on held-out data.

Reports the implicit-reward accuracy of the policy on held-out preference pairs (with the
baseline as reference: the fraction of pairs where ``ρ_w > ρ_l``, independent of β; no judge
needed), and with a judge each policy's judged score on held-out prompts (scoring judges) and
the head-to-head win rate (ties count half) with its Wilson interval and W/T/L counts. Models run
on ``--device`` in ``--dtype`` (auto: CUDA in bfloat16 when available, else CPU in float32);
responses are generated in batches there (or by vLLM with ``--backend vllm``). With
``--output_dir`` it writes ``results.json`` and ``generations.jsonl``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from jsonargparse import ActionConfigFile, ArgumentParser
from transformers import GenerationConfig

from lit_align.data.datamodule import BUILTIN_TASK
from lit_align.eval.compare import (
    BadRows,
    EvalData,
    JudgeKind,
    check_judge,
    load_eval_data,
    make_judge,
    resolve_split,
    reward_accuracy,
)
from lit_align.eval.generate import generate_responses, generation_config, write_jsonl
from lit_align.eval.judges import Judge, RuleJudge, ScoringJudge
from lit_align.eval.runtime import (
    check_model_dir,
    load_policy,
    resolve_device,
    resolve_dtype,
    run_max_length,
)
from lit_align.eval.winrate import format_win_rate, win_rate
from lit_align.models import PolicyConfig, load_tokenizer

Backend = Literal["transformers", "vllm"]


@dataclass(frozen=True)
class EvalResult:
    """Numbers reported by ``lit-align eval`` (judge fields are None without a judge; scores are
    None for a pairwise judge)."""

    reward_accuracy: float
    num_pairs: int
    num_truncated: int | None
    num_bad_rows: int | None
    max_length: int
    policy_score: float | None = None
    baseline_score: float | None = None
    policy_correct: float | None = None
    baseline_correct: float | None = None
    win_rate: float | None = None
    win_rate_low: float | None = None
    win_rate_high: float | None = None
    wins: float | None = None
    ties: float | None = None
    losses: float | None = None
    win_rate_text: str | None = None
    num_prompts: int = 0


@dataclass(frozen=True)
class EvalOptions:
    """Where and how the models run, and how responses are generated."""

    device: str = "auto"
    dtype: str = "auto"
    backend: Backend = "transformers"
    generation: GenerationConfig = field(default_factory=lambda: generation_config(None))
    seed: int = 0
    batch_size: int = 32


def evaluate(
    policy_dir: str,
    baseline_dir: str,
    dataset: str = BUILTIN_TASK,
    split: str | None = None,
    judge: JudgeKind | None = None,
    judge_model: str | None = None,
    num_prompts: int = 200,
    num_pairs: int = 200,
    max_length: int | None = None,
    on_bad_rows: BadRows = "error",
    options: EvalOptions | None = None,
) -> tuple[EvalResult, list[dict]]:
    """Compare two policies; returns the result and the per-prompt generations."""
    options = options or EvalOptions()
    check_model_dir(policy_dir, "--policy")
    check_model_dir(baseline_dir, "--baseline")
    split = resolve_split(dataset, split)
    check_judge(judge, dataset, judge_model)  # before any model loads
    max_length = max_length or run_max_length(policy_dir)
    device, dtype = resolve_device(options.device), resolve_dtype(options.dtype, options.device)
    tokenizer = load_tokenizer(PolicyConfig(pretrained=policy_dir))
    data = load_eval_data(
        dataset, split, tokenizer, num_prompts, num_pairs, options.seed, max_length, on_bad_rows
    )
    policy = load_policy(policy_dir, device, dtype)
    baseline = load_policy(baseline_dir, device, dtype)
    accuracy = reward_accuracy(policy, baseline, data.pairs, tokenizer.pad_token_id)
    result = {
        "reward_accuracy": accuracy,
        "num_pairs": len(data.pairs),
        "num_truncated": data.stats.truncated if data.stats else None,
        "num_bad_rows": data.stats.bad if data.stats else None,
        "max_length": max_length,
    }
    judge_ = make_judge(judge, dataset, judge_model, device=device, dtype=dtype)
    if judge_ is None:
        return EvalResult(**result), []
    models = {"policy": (policy, policy_dir), "baseline": (baseline, baseline_dir)}
    ours, theirs = (_generate(*models[k], tokenizer, data, options) for k in models)
    judged, rows = _judge(judge_, data, ours, theirs)
    return EvalResult(**result, **judged, num_prompts=len(data.prompts)), rows


def _generate(model, model_dir: str, tokenizer, data: EvalData, options: EvalOptions) -> list:
    if options.backend == "vllm":
        from lit_align.eval.vllm_backend import vllm_generate

        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return vllm_generate(model_dir, data.prompts, options.generation, options.seed, dtype)
    return generate_responses(
        model, tokenizer, data.prompts, options.generation, options.seed, options.batch_size
    )


def _judge(judge: Judge, data: EvalData, ours: list[str], theirs: list[str]):
    """The judged numbers and one row per prompt (prompt text as rendered from the data)."""
    outcomes = judge.compare(data.conversations, ours, theirs)
    outcome = win_rate(outcomes)
    judged = {
        **_scores(judge, data.conversations, ours, theirs),
        "win_rate": outcome.rate,
        "win_rate_low": outcome.low,
        "win_rate_high": outcome.high,
        "wins": outcome.wins,
        "ties": outcome.ties,
        "losses": outcome.losses,
        "win_rate_text": format_win_rate(outcome),
    }
    rows = [
        {"prompt": p, "policy": a, "baseline": b, "outcome": o}
        for p, a, b, o in zip(data.prompts, ours, theirs, outcomes)
    ]
    return judged, rows


def _scores(judge: Judge, prompts, ours: list[str], theirs: list[str]) -> dict[str, Any]:
    if not isinstance(judge, ScoringJudge):
        return {}
    a, b = judge.score(prompts, ours), judge.score(prompts, theirs)
    exact = isinstance(judge, RuleJudge)  # 1.0 means exactly correct only for the rule judge
    return {
        "policy_score": sum(a) / len(a),
        "baseline_score": sum(b) / len(b),
        "policy_correct": sum(s == 1.0 for s in a) / len(a) if exact else None,
        "baseline_correct": sum(s == 1.0 for s in b) / len(b) if exact else None,
    }


def build_parser() -> ArgumentParser:
    """The ``lit-align eval`` parser."""
    parser = ArgumentParser(prog="lit-align eval", description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--policy", type=str, required=True, help="aligned policy HF directory")
    parser.add_argument("--baseline", type=str, required=True, help="baseline HF directory")
    parser.add_argument("--dataset", type=str, default=BUILTIN_TASK, help="held-out data")
    parser.add_argument(
        "--split",
        type=str | None,
        default=None,
        help="split of --dataset (default: validation for builtin:sort, the file name for a "
        "local file; required for hub datasets)",
    )
    parser.add_argument("--on_bad_rows", type=BadRows, default="error", help="error or skip")
    parser.add_argument(
        "--judge",
        type=JudgeKind | None,
        default=None,
        help="rule (the embedded task's default), reward_model or pairwise_llm; "
        "none elsewhere: reward accuracy only",
    )
    parser.add_argument("--judge_model", type=str | None, default=None, help="judge directory")
    parser.add_argument("--num_prompts", type=int, default=200)
    parser.add_argument("--num_pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="data and sampling seed")
    parser.add_argument(
        "--max_length",
        type=int | None,
        default=None,
        help="tokens of prompt + response (default: the policy's training config, else the "
        "data default)",
    )
    parser.add_argument("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", type=str, default="auto", help="auto, float32, bfloat16, ...")
    parser.add_argument("--backend", type=Backend, default="transformers")
    parser.add_argument("--batch_size", type=int, default=32, help="prompts per generate call")
    parser.add_argument(
        "--generation",
        type=dict[str, Any],
        default={"max_new_tokens": 64},
        help="any transformers GenerationConfig field, e.g. --generation.top_k 50",
    )
    parser.add_argument("--output_dir", type=str | None, default=None)
    return parser


def main(argv: list[str] | None = None) -> EvalResult:
    """Entry point of ``lit-align eval``."""
    cfg = build_parser().parse_args(argv)
    options = EvalOptions(
        cfg.device,
        cfg.dtype,
        cfg.backend,
        generation_config(cfg.generation),
        cfg.seed,
        cfg.batch_size,
    )
    result, rows = evaluate(
        cfg.policy, cfg.baseline, cfg.dataset, cfg.split, cfg.judge, cfg.judge_model,
        cfg.num_prompts, cfg.num_pairs, cfg.max_length, cfg.on_bad_rows, options,
    )  # fmt: skip
    _print(cfg, result, rows)
    if cfg.output_dir:
        os.makedirs(cfg.output_dir, exist_ok=True)
        with open(os.path.join(cfg.output_dir, "results.json"), "w") as f:
            json.dump(asdict(result), f, indent=2)
        write_jsonl(os.path.join(cfg.output_dir, "generations.jsonl"), rows)
    return result


def _print(cfg, result: EvalResult, rows: list[dict]) -> None:
    print(f"policy:   {cfg.policy}\nbaseline: {cfg.baseline}")
    extra = f", {result.num_truncated} truncated" if result.num_truncated is not None else ""
    extra += f", {result.num_bad_rows} bad rows skipped" if result.num_bad_rows else ""
    print(
        f"held-out reward accuracy on {result.num_pairs} pairs (max_length {result.max_length}"
        f"{extra}): {result.reward_accuracy:.1%}"
    )
    if result.win_rate_text is None:
        print("no --judge: reward accuracy only")
        return
    if result.policy_score is not None:
        print(
            f"judged score    policy {result.policy_score:.3f}  "
            f"baseline {result.baseline_score:.3f}"
        )
    if result.policy_correct is not None:
        print(
            f"exact correct   policy {result.policy_correct:.1%}  "
            f"baseline {result.baseline_correct:.1%}"
        )
    print(f"win rate of policy vs baseline on {result.num_prompts} prompts: {result.win_rate_text}")
    for row in rows[:3]:
        for name in ("prompt", "policy", "baseline"):
            print(f"--- {name}\n{row[name]}")
