"""``lit-align eval``: judge an aligned policy against a baseline on held-out data.

Reports the implicit-reward accuracy of the policy on held-out preference pairs (with the
baseline as reference: the fraction of pairs where ``ρ_w > ρ_l``, independent of β), each
policy's judged score on held-out prompts (scoring judges), and the head-to-head win rate (ties
count half) with its Wilson interval. With ``--output_dir`` it writes ``results.json`` and
``generations.jsonl`` (prompt, both responses, the judge's outcome).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from jsonargparse import ActionConfigFile, ArgumentParser
from transformers import AutoModelForCausalLM

from lit_align.data.datamodule import BUILTIN_TASK
from lit_align.eval.compare import JudgeKind, load_eval_data, make_judge, reward_accuracy
from lit_align.eval.generate import GenerationConfig, generate_responses, write_jsonl
from lit_align.eval.judges import RuleJudge, ScoringJudge
from lit_align.eval.winrate import format_win_rate, win_rate
from lit_align.models import PolicyConfig, load_tokenizer


@dataclass(frozen=True)
class EvalResult:
    """Numbers reported by ``lit-align eval`` (scores are None for a pairwise judge)."""

    reward_accuracy: float
    policy_score: float | None
    baseline_score: float | None
    policy_correct: float | None
    baseline_correct: float | None
    win_rate: float
    win_rate_low: float
    win_rate_high: float
    win_rate_text: str
    num_prompts: int
    num_pairs: int


def _load(path: str, flag: str) -> AutoModelForCausalLM:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{flag}: model directory {path!r} does not exist (train it first)")
    return AutoModelForCausalLM.from_pretrained(path).eval()


def evaluate(
    policy_dir: str,
    baseline_dir: str,
    dataset: str = BUILTIN_TASK,
    split: str = "validation",
    judge: JudgeKind | None = None,
    judge_model: str | None = None,
    num_prompts: int = 200,
    num_pairs: int = 200,
    seed: int = 0,
    max_length: int = 64,
    generation: GenerationConfig | None = None,
) -> tuple[EvalResult, list[dict]]:
    """Compare two policies; returns the result and the per-prompt generations."""
    generation = generation or GenerationConfig(max_new_tokens=32)
    policy, baseline = _load(policy_dir, "--policy"), _load(baseline_dir, "--baseline")
    tokenizer = load_tokenizer(PolicyConfig(pretrained=policy_dir))
    judge_ = make_judge(judge, dataset, judge_model)
    data = load_eval_data(
        dataset, split, policy_dir, tokenizer, num_prompts, num_pairs, seed, max_length
    )
    accuracy = reward_accuracy(policy, baseline, data.pairs, tokenizer.pad_token_id)
    ours = generate_responses(policy, tokenizer, data.prompts, generation)
    theirs = generate_responses(baseline, tokenizer, data.prompts, generation)
    outcomes = judge_.compare(data.prompts, ours, theirs)
    outcome = win_rate(outcomes)
    scores = _scores(judge_, data.prompts, ours, theirs)
    rows = [
        {"prompt": p, "policy": a, "baseline": b, "outcome": o}
        for p, a, b, o in zip(data.prompts, ours, theirs, outcomes)
    ]
    result = EvalResult(
        reward_accuracy=accuracy,
        **scores,
        win_rate=outcome.rate,
        win_rate_low=outcome.low,
        win_rate_high=outcome.high,
        win_rate_text=format_win_rate(outcome),
        num_prompts=len(data.prompts),
        num_pairs=len(data.pairs),
    )
    return result, rows


def _scores(judge, prompts, ours, theirs) -> dict[str, float | None]:
    if not isinstance(judge, ScoringJudge):
        return dict.fromkeys(
            ("policy_score", "baseline_score", "policy_correct", "baseline_correct")
        )
    a, b = judge.score(prompts, ours), judge.score(prompts, theirs)
    exact = isinstance(judge, RuleJudge)  # 1.0 means exactly correct only for the rule judge
    return {
        "policy_score": sum(a) / len(a),
        "baseline_score": sum(b) / len(b),
        "policy_correct": sum(s == 1.0 for s in a) / len(a) if exact else None,
        "baseline_correct": sum(s == 1.0 for s in b) / len(b) if exact else None,
    }


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-align eval", description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--policy", type=str, required=True, help="aligned policy HF directory")
    parser.add_argument("--baseline", type=str, required=True, help="baseline HF directory")
    parser.add_argument(
        "--dataset",
        type=str,
        default=BUILTIN_TASK,
        help="held-out data: builtin:sort or any preference dataset",
    )
    parser.add_argument("--split", type=str, default="validation", help="split of --dataset")
    parser.add_argument(
        "--judge",
        type=JudgeKind | None,
        default=None,
        help="rule (embedded task, the default there), reward_model, pairwise_llm",
    )
    parser.add_argument(
        "--judge_model",
        type=str | None,
        default=None,
        help="reward model or judge LM directory / hub id",
    )
    parser.add_argument("--num_prompts", type=int, default=200)
    parser.add_argument("--num_pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--generation", type=GenerationConfig, default=GenerationConfig(32))
    parser.add_argument(
        "--output_dir",
        type=str | None,
        default=None,
        help="write results.json and generations.jsonl here",
    )
    return parser


def main(argv: list[str] | None = None) -> EvalResult:
    parser = build_parser()
    cfg = parser.instantiate_classes(parser.parse_args(argv))
    result, rows = evaluate(
        cfg.policy,
        cfg.baseline,
        cfg.dataset,
        cfg.split,
        cfg.judge,
        cfg.judge_model,
        cfg.num_prompts,
        cfg.num_pairs,
        cfg.seed,
        cfg.max_length,
        cfg.generation,
    )
    print(f"policy:   {cfg.policy}\nbaseline: {cfg.baseline}")
    print(f"reward accuracy on {result.num_pairs} held-out pairs: {result.reward_accuracy:.1%}")
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
    for row in rows[:5]:
        print(
            f"  {row['prompt'].strip()!r}: policy {row['policy']!r} | baseline {row['baseline']!r}"
        )
    if cfg.output_dir:
        os.makedirs(cfg.output_dir, exist_ok=True)
        with open(os.path.join(cfg.output_dir, "results.json"), "w") as f:
            json.dump(asdict(result), f, indent=2)
        write_jsonl(os.path.join(cfg.output_dir, "generations.jsonl"), rows)
    return result
