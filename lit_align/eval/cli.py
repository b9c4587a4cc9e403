"""``lit-align eval``: judge an aligned policy against a baseline on held-out data.

Reports the implicit-reward accuracy of the policy on held-out preference pairs (with the
baseline as reference: the fraction of pairs where ``ρ_w > ρ_l``, independent of β), each
policy's judged score and exact-correct rate on held-out prompts, and the head-to-head win rate
(ties count half) with its confidence interval.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import torch
from jsonargparse import ActionConfigFile, ArgumentParser
from transformers import AutoModelForCausalLM

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.formats import RowContext, normalize_row
from lit_align.eval.generate import GenerationConfig, generate_responses
from lit_align.eval.judges import RuleJudge
from lit_align.eval.winrate import format_win_rate, win_rate
from lit_align.models import CausalLMScorer, PolicyConfig, load_tokenizer


@dataclass(frozen=True)
class EvalResult:
    """Numbers reported by ``lit-align eval``."""

    reward_accuracy: float
    policy_score: float
    baseline_score: float
    policy_correct: float
    baseline_correct: float
    win_rate: float
    win_rate_low: float
    win_rate_high: float
    win_rate_text: str
    num_prompts: int
    num_pairs: int
    samples: list[dict] = field(default_factory=list)


def _load(path: str, flag: str) -> AutoModelForCausalLM:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{flag}: model directory {path!r} does not exist (train it first)")
    return AutoModelForCausalLM.from_pretrained(path).eval()


@torch.no_grad()
def reward_accuracy(policy, reference, tokenizer, rows: list[dict], max_length: int) -> float:
    """Fraction of pairs whose policy/reference log-ratio margin ``ρ_w − ρ_l`` is positive."""
    trunc = Truncation(max_length)
    encoded = [
        tokenize_row(
            normalize_row(r, "paired", RowContext("eval", "validation", i), tokenizer),
            tokenizer,
            trunc,
        )
        for i, r in enumerate(rows)
    ]
    batch = PreferenceCollator(tokenizer.pad_token_id)(encoded)
    rho = CausalLMScorer(policy)(batch).sum - CausalLMScorer(reference)(batch).sum  # (2B,)
    half = rho.shape[0] // 2
    return (rho[:half] > rho[half:]).float().mean().item()


def evaluate(
    policy_dir: str,
    baseline_dir: str,
    num_prompts: int = 200,
    num_pairs: int = 200,
    seed: int = 0,
    max_length: int = 64,
    generation: GenerationConfig | None = None,
) -> EvalResult:
    """Compare ``policy_dir`` against ``baseline_dir`` on the embedded sort task."""
    from lit_align.data.synthetic import make_prompts, make_rows

    generation = generation or GenerationConfig(max_new_tokens=32)
    policy, baseline = _load(policy_dir, "--policy"), _load(baseline_dir, "--baseline")
    tokenizer = load_tokenizer(PolicyConfig(pretrained=policy_dir))
    pairs = make_rows(num_pairs, seed + 1, split="validation")
    accuracy = reward_accuracy(policy, baseline, tokenizer, pairs, max_length)
    prompts = make_prompts(num_prompts, seed, split="eval")
    ours = generate_responses(policy, tokenizer, prompts, generation)
    theirs = generate_responses(baseline, tokenizer, prompts, generation)
    judge = RuleJudge()
    outcome = win_rate(judge.compare(prompts, ours, theirs))
    ours_s, theirs_s = judge.score(prompts, ours), judge.score(prompts, theirs)
    return EvalResult(
        reward_accuracy=accuracy,
        policy_score=sum(ours_s) / len(ours_s),
        baseline_score=sum(theirs_s) / len(theirs_s),
        policy_correct=sum(s == 1.0 for s in ours_s) / len(ours_s),
        baseline_correct=sum(s == 1.0 for s in theirs_s) / len(theirs_s),
        win_rate=outcome.rate,
        win_rate_low=outcome.low,
        win_rate_high=outcome.high,
        win_rate_text=format_win_rate(outcome),
        num_prompts=num_prompts,
        num_pairs=num_pairs,
        samples=[
            {"prompt": p, "policy": a, "baseline": b}
            for p, a, b in list(zip(prompts, ours, theirs))[:5]
        ],
    )


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lit-align eval", description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_argument("--policy", type=str, required=True, help="aligned policy HF directory")
    parser.add_argument("--baseline", type=str, required=True, help="baseline HF directory")
    parser.add_argument("--num_prompts", type=int, default=200)
    parser.add_argument("--num_pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--generation", type=GenerationConfig, default=GenerationConfig(32))
    parser.add_argument("--output", type=str | None, default=None, help="write results JSON here")
    return parser


def main(argv: list[str] | None = None) -> EvalResult:
    cfg = build_parser().parse_args(argv)
    cfg = build_parser().instantiate_classes(cfg)
    result = evaluate(
        cfg.policy,
        cfg.baseline,
        cfg.num_prompts,
        cfg.num_pairs,
        cfg.seed,
        cfg.max_length,
        cfg.generation,
    )
    print(f"policy:   {cfg.policy}\nbaseline: {cfg.baseline}")
    print(f"reward accuracy on {result.num_pairs} held-out pairs: {result.reward_accuracy:.1%}")
    print(f"judged score    policy {result.policy_score:.3f}  baseline {result.baseline_score:.3f}")
    print(
        f"exact correct   policy {result.policy_correct:.1%}  "
        f"baseline {result.baseline_correct:.1%}"
    )
    print(f"win rate of policy vs baseline on {result.num_prompts} prompts: {result.win_rate_text}")
    for s in result.samples:
        print(f"  {s['prompt'].strip()!r}: policy {s['policy']!r} | baseline {s['baseline']!r}")
    if cfg.output:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.output)), exist_ok=True)
        with open(cfg.output, "w") as f:
            json.dump(asdict(result), f, indent=2)
    return result
