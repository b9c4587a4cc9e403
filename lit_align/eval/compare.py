"""Held-out data, judges and reward accuracy shared by ``lit-align eval`` and the study.

Evaluation data comes from the embedded task (held-out ``eval`` prompts and ``validation``
pairs, disjoint from training) or from any preference dataset. Pairs are validated, rendered and
tokenised exactly as in training by
:class:`~lit_align.data.datamodule.PreferenceDataModule` (same ``max_length``, truncation and
bad-row policy). Prompts to generate from are the rows' prompts rendered from the data as text
(the policy's chat template applied; never decoded token ids), and judges receive each prompt as
a conversation so they can render it with their own template.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from lit_align.data.collate import PreferenceCollator, Truncation, special_prefix, tokenize_row
from lit_align.data.datamodule import BUILTIN_TASK, PreferenceDataModule
from lit_align.data.formats import DataError, RowContext, normalize_row
from lit_align.data.prepare import SplitStats
from lit_align.data.sources import load_split, split_names
from lit_align.eval.judges import Judge, PairwiseLLMJudge, Prompt, RewardModelJudge, RuleJudge
from lit_align.eval.runtime import run_config, run_max_length
from lit_align.scorer import CausalLMScorer

JudgeKind = Literal["rule", "reward_model", "pairwise_llm"]
BadRows = Literal["error", "skip"]


@dataclass(frozen=True)
class EvalData:
    """Prompts to generate from and tokenised pairs to score.

    Attributes:
        prompts: rendered prompts (the policy's chat template applied), one response each.
        conversations: the same prompts as the data gives them (text or messages), for judges.
        pairs: tokenised rows with ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``.
        split: the split the rows came from, as messages name it.
        stats: rows kept, bad and truncated (None for the embedded task).
    """

    prompts: list[str]
    conversations: list[Prompt]
    pairs: list[dict[str, Any]]
    split: str
    stats: SplitStats | None = None


def resolve_split(dataset: str, split: str | None) -> str:
    """``--split``, or its default: ``validation`` for the embedded task, the file's (or
    directory's) name for local files.

    Raises:
        ValueError: If ``split`` is None for a hub dataset or a saved ``datasets`` directory.
    """
    if split is not None:
        split_names(split, "--split")
        return split
    if dataset == BUILTIN_TASK:
        return "validation"
    path = os.path.expanduser(dataset)
    is_saved = os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, n)) for n in ("dataset_dict.json", "state.json")
    )
    if not os.path.exists(path) or is_saved:
        raise ValueError(f"--split is required for --dataset {dataset!r} (e.g. test)")
    stem = os.path.basename(os.path.normpath(path)).split(".")[0]
    return re.sub(r"\W", "_", stem) or "train"


def load_eval_data(
    dataset: str,
    split: str,
    tokenizer: PreTrainedTokenizerBase,
    num_prompts: int,
    num_pairs: int,
    seed: int,
    max_length: int,
    on_bad_rows: BadRows = "error",
) -> EvalData:
    """Held-out prompts and pairs of ``dataset`` (``builtin:sort`` or any preference data)."""
    if dataset == BUILTIN_TASK:
        return _builtin_data(tokenizer, num_prompts, num_pairs, seed, max_length)
    dm = _datamodule(dataset, split, tokenizer, max_length, on_bad_rows)
    if dm.train_data is None or "chosen_ids" not in dm.train_data.column_names:
        raise ValueError(f"--dataset {dataset!r}: evaluation needs paired data")
    pairs = list(dm.train_data.select(range(min(num_pairs, len(dm.train_data)))))
    prompts, conversations = _prompts(dataset, split, dm.format, tokenizer, on_bad_rows)
    return EvalData(
        prompts[:num_prompts], conversations[:num_prompts], pairs, split, dm.stats["train"]
    )


def _builtin_data(tokenizer, num_prompts, num_pairs, seed, max_length) -> EvalData:
    """The embedded task's held-out prompts and validation pairs (disjoint from training)."""
    from lit_align.data.synthetic import make_prompts, make_rows

    trunc, prefix = Truncation(max_length), special_prefix(tokenizer)
    pairs = [
        tokenize_row(
            normalize_row(r, "paired", RowContext(BUILTIN_TASK, "validation", i), tokenizer),
            tokenizer,
            trunc,
            prefix,
        )
        for i, r in enumerate(make_rows(num_pairs, seed + 1, split="validation"))
    ]
    prompts = make_prompts(num_prompts, seed, split="eval")
    return EvalData(prompts, list(prompts), pairs, "validation")


def _datamodule(dataset, split, tokenizer, max_length, on_bad_rows) -> PreferenceDataModule:
    """The training data module, reading ``split`` as its training split."""
    dm = PreferenceDataModule(
        dataset=dataset, train_split=split, max_length=max_length, on_bad_rows=on_bad_rows
    )
    dm.tokenizer = tokenizer
    dm.setup("validate")
    return dm


def _prompts(
    dataset: str, split: str, fmt: str, tokenizer: PreTrainedTokenizerBase, on_bad_rows: BadRows
) -> tuple[list[str], list[Prompt]]:
    """Distinct prompts of the split in row order: rendered text, and as the data gives them."""
    rendered: dict[str, Prompt] = {}
    rows, _ = load_split(dataset, split, skip_bad_lines=on_bad_rows == "skip")
    for index, row in enumerate(rows):
        try:
            canonical = normalize_row(row, fmt, RowContext(dataset, split, index), tokenizer)
        except DataError:
            if on_bad_rows == "error":
                raise
            continue
        rendered.setdefault(canonical["prompt"], _conversation(row, canonical["prompt"]))
    return list(rendered), list(rendered.values())


def _conversation(row: dict[str, Any], rendered: str) -> Prompt:
    """The prompt as messages when the row has them (a message list, or whole conversations
    whose history is the prompt), else the prompt text."""
    prompt, chosen = row.get("prompt"), row.get("chosen")
    if isinstance(prompt, list):
        return prompt
    if isinstance(chosen, list) and len(chosen) > 1:
        return chosen[:-1]
    return prompt if isinstance(prompt, str) else rendered


@torch.no_grad()
def reward_accuracy(
    policy: nn.Module, reference: nn.Module, pairs: list[dict], pad_id: int, batch_size: int = 32
) -> float:
    """Fraction of pairs whose log-ratio margin ``ρ_w − ρ_l`` (policy vs reference) is > 0.

    Batches run on the policy's device (the reference must be on the same one).
    """
    collate = PreferenceCollator(pad_id)
    device = next(policy.parameters()).device
    wins = 0
    for start in range(0, len(pairs), batch_size):
        batch = collate(pairs[start : start + batch_size]).to(device)
        rho = CausalLMScorer(policy)(batch).sum - CausalLMScorer(reference)(batch).sum  # (2B,)
        half = rho.shape[0] // 2
        wins += int((rho[:half] > rho[half:]).sum())
    return wins / len(pairs)


def check_judge(kind: JudgeKind | None, dataset: str, judge_model: str | None) -> None:
    """Validate ``--judge`` / ``--judge_model`` before any model loads (None: no judge).

    Raises:
        ValueError: Naming the flag to change.
        FileNotFoundError: If ``judge_model`` is a local path that does not exist.
    """
    if kind == "rule" and dataset != BUILTIN_TASK:
        raise ValueError(f"--judge rule judges only {BUILTIN_TASK!r}, not {dataset!r}")
    if kind in ("reward_model", "pairwise_llm") and judge_model is None:
        raise ValueError(f"--judge {kind} needs --judge_model (a local directory or hub id)")
    local = judge_model and judge_model.startswith(("/", ".", "~"))
    if local and not os.path.isdir(os.path.expanduser(judge_model)):
        raise FileNotFoundError(f"--judge_model: directory {judge_model!r} does not exist")


def make_judge(
    kind: JudgeKind | None,
    dataset: str,
    judge_model: str | None,
    trust_remote_code: bool = False,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Judge | None:
    """The judge named by ``--judge`` (default: the rule judge on the embedded task, else none:
    reward accuracy only)."""
    kind = kind or ("rule" if dataset == BUILTIN_TASK else None)
    check_judge(kind, dataset, judge_model)
    if kind is None:
        return None
    if kind == "rule":
        return RuleJudge()
    remote = {"trust_remote_code": trust_remote_code}
    if kind == "reward_model":
        path = os.path.expanduser(judge_model)
        # A lit_align export reads at most what it was trained on; another model, its context.
        max_length = run_max_length(path) if run_config(path) else None
        return RewardModelJudge(path, device=device, dtype=dtype, max_length=max_length, **remote)
    path = os.path.expanduser(judge_model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **remote).to(device)
    tokenizer = AutoTokenizer.from_pretrained(path, **remote)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return PairwiseLLMJudge(model.eval(), tokenizer)
