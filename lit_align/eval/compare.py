"""Held-out data, judges and reward accuracy shared by ``lit-align eval`` and the study.

Evaluation data comes from the embedded task (held-out ``eval`` prompts and ``validation``
pairs, disjoint from training) or from any preference dataset through
:class:`~lit_align.data.datamodule.PreferenceDataModule` (the named split's pairs, rendered and
tokenised exactly as in training; prompts are the decoded prompt tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.datamodule import BUILTIN_TASK, PreferenceDataModule
from lit_align.data.formats import RowContext, normalize_row
from lit_align.eval.judges import Judge, PairwiseLLMJudge, RewardModelJudge, RuleJudge
from lit_align.models import CausalLMScorer

JudgeKind = Literal["rule", "reward_model", "pairwise_llm"]


@dataclass(frozen=True)
class EvalData:
    """Prompts to generate from and tokenised pairs to score.

    Attributes:
        prompts: rendered prompts (chat template applied), one response generated per prompt.
        pairs: tokenised rows with ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``.
    """

    prompts: list[str]
    pairs: list[dict[str, Any]]


def load_eval_data(
    dataset: str,
    split: str,
    tokenizer_dir: str,
    tokenizer: PreTrainedTokenizerBase,
    num_prompts: int,
    num_pairs: int,
    seed: int,
    max_length: int,
) -> EvalData:
    """Held-out prompts and pairs of ``dataset`` (``builtin:sort`` or any preference data)."""
    if dataset == BUILTIN_TASK:
        from lit_align.data.synthetic import make_prompts, make_rows

        rows = make_rows(num_pairs, seed + 1, split="validation")
        trunc = Truncation(max_length)
        pairs = [
            tokenize_row(
                normalize_row(r, "paired", RowContext(dataset, split, i), tokenizer),
                tokenizer,
                trunc,
            )
            for i, r in enumerate(rows)
        ]
        return EvalData(make_prompts(num_prompts, seed, split="eval"), pairs)
    dm = PreferenceDataModule(
        dataset=dataset, train_split=split, tokenizer=tokenizer_dir, max_length=max_length
    )
    dm.setup("validate")
    if dm.train_data is None or "chosen_ids" not in dm.train_data.column_names:
        raise ValueError(f"--dataset {dataset!r}: evaluation needs paired data")
    pairs = list(dm.train_data.select(range(min(num_pairs, len(dm.train_data)))))
    prompts = list(dict.fromkeys(tokenizer.decode(p["prompt_ids"]) for p in pairs))
    return EvalData(prompts[:num_prompts], pairs)


@torch.no_grad()
def reward_accuracy(policy, reference, pairs: list[dict], pad_id: int, batch_size: int = 32):
    """Fraction of pairs whose log-ratio margin ``ρ_w − ρ_l`` (policy vs reference) is > 0."""
    collate = PreferenceCollator(pad_id)
    wins = 0
    for start in range(0, len(pairs), batch_size):
        batch = collate(pairs[start : start + batch_size])
        rho = CausalLMScorer(policy)(batch).sum - CausalLMScorer(reference)(batch).sum  # (2B,)
        half = rho.shape[0] // 2
        wins += int((rho[:half] > rho[half:]).sum())
    return wins / len(pairs)


def make_judge(
    kind: JudgeKind | None, dataset: str, judge_model: str | None, trust_remote_code: bool = False
) -> Judge:
    """The judge named by ``--judge`` (default: the rule judge on the embedded task)."""
    kind = kind or ("rule" if dataset == BUILTIN_TASK else None)
    if kind is None:
        raise ValueError(
            "--judge is required outside the embedded task: reward_model or "
            "pairwise_llm, with --judge_model"
        )
    if kind == "rule":
        if dataset != BUILTIN_TASK:
            raise ValueError(f"--judge rule judges only {BUILTIN_TASK!r}, not {dataset!r}")
        return RuleJudge()
    if judge_model is None:
        raise ValueError(f"--judge {kind} needs --judge_model (a local directory or hub id)")
    if kind == "reward_model":
        return RewardModelJudge(judge_model, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(judge_model, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(judge_model, trust_remote_code=trust_remote_code)
    return PairwiseLLMJudge(model.eval(), tokenizer)
