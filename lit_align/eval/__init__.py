"""Evaluation: generate responses, judge them pairwise, aggregate win rates."""

from lit_align.eval.generate import generate_responses, generation_config, read_jsonl, write_jsonl
from lit_align.eval.judges import (
    PAIRWISE_TEMPLATE,
    Judge,
    PairwiseLLMJudge,
    RewardModelJudge,
    RuleJudge,
    ScoringJudge,
)
from lit_align.eval.winrate import WinRate, format_win_rate, mean_std, win_rate

__all__ = [
    "PAIRWISE_TEMPLATE",
    "Judge",
    "PairwiseLLMJudge",
    "RewardModelJudge",
    "RuleJudge",
    "ScoringJudge",
    "WinRate",
    "format_win_rate",
    "generate_responses",
    "generation_config",
    "mean_std",
    "read_jsonl",
    "win_rate",
    "write_jsonl",
]
