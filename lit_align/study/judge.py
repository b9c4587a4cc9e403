"""The study's own judge: a reward model trained on data the policies never see.

With ``judge_config`` the study trains a reward model once (``lit-align fit``), judges every
policy with its export and states it in the report. Before any training it reads the training
split of the judge's config and of the SFT and preference configs and refuses prompts they
share (by prompt text, or by ``prompt_id`` where the rows have one): a judge that saw the
policies' prompts would judge its own training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import datasets

from lit_align.data.collate import PreferenceCollator
from lit_align.data.datamodule import BUILTIN_TASK, PreferenceDataModule
from lit_align.data.sources import load_split, map_columns
from lit_align.eval.compare import BadRows, load_eval_data
from lit_align.eval.runtime import run_max_length
from lit_align.lightning_cli import run_lightning_cli
from lit_align.reward.model import load_reward_model
from lit_align.reward.score import score_rows


@dataclass(frozen=True)
class TrainingData:
    """The training split a ``lit-align fit`` config reads, and its prompts.

    Attributes:
        config: the config file (the study's extra arguments applied).
        dataset: its ``data.dataset``.
        split: its ``data.train_split`` (``builtin:sort`` has one).
        ids: the rows' ``prompt_id`` values (empty when the rows have none).
        texts: the rows' prompts as text (a message list as JSON).
    """

    config: str
    dataset: str
    split: str
    ids: frozenset[str]
    texts: frozenset[str]

    def describe(self) -> str:
        """``tests/data/x.jsonl.gz split 'train[:500]' (500 prompts)``."""
        split = "" if self.dataset == BUILTIN_TASK else f" split {self.split!r}"
        return f"{self.dataset}{split} ({len(self.texts)} prompts)"

    def shared(self, other: TrainingData) -> int:
        """Distinct prompts of ``self`` that ``other`` has too: the larger of the counts by
        prompt text and by ``prompt_id`` (0 only when neither matches)."""
        by_text = self.texts & other.texts
        return max(len(by_text), len(self.ids & other.ids))


def training_data(config: str, args: list[str]) -> TrainingData:
    """Parse ``lit-align fit --config config *args`` (nothing is built or trained) and read the
    prompts of its training split."""
    cli = run_lightning_cli([f"--config={config}", *args], run=False)
    dm: PreferenceDataModule = cli.datamodule
    rows = _rows(dm)
    ids = {str(r["prompt_id"]) for r in rows if r.get("prompt_id") is not None}
    texts = {_prompt_text(r) for r in rows}
    hp = dm.hparams
    return TrainingData(config, hp.dataset, hp.train_split, frozenset(ids), frozenset(texts))


def _rows(dm: PreferenceDataModule) -> list[dict[str, Any]]:
    """The rows of ``dm``'s training split before tokenisation (held-out fraction included)."""
    hp = dm.hparams
    if hp.dataset == BUILTIN_TASK:
        from lit_align.data.synthetic import make_rows

        return make_rows(hp.builtin_rows, hp.seed)
    source = (hp.dataset, hp.train_split, hp.subset, hp.revision, hp.cache_dir)
    rows, _ = load_split(*source, skip_bad_lines=hp.on_bad_rows == "skip")
    where = f"--data.dataset {hp.dataset!r}, split {hp.train_split!r}"
    return list(map_columns(rows, dm.columns, where) if dm.columns else rows)


def _prompt_text(row: dict[str, Any]) -> str:
    """The row's prompt; for whole conversations without one, every turn but the last."""
    prompt = row.get("prompt")
    if prompt is None and isinstance(row.get("chosen"), list):
        prompt = row["chosen"][:-1]
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def check_disjoint(judge: TrainingData, policies: list[TrainingData]) -> None:
    """Refuse a judge trained on prompts the policies train on.

    Raises:
        ValueError: Naming both configs, the overlap count and how to split the data.
    """
    shared = {p.config: judge.shared(p) for p in policies}
    if any(shared.values()):
        counts = ", ".join(f"{n} with {c!r}" for c, n in shared.items() if n)
        raise ValueError(
            f"judge_config {judge.config!r} trains on prompts the policies train on ({counts} "
            f"of its {len(judge.texts)}, by prompt text or prompt_id); give the judge a disjoint "
            "split, e.g. --data.train_split=train[:50%] in judge_args and "
            "--data.train_split=train[50%:] in sft_args and preference_args"
        )


def judge_accuracy(
    judge_dir: str,
    dataset: str,
    split: str,
    num_pairs: int,
    seed: int,
    on_bad_rows: BadRows,
    device: str,
    batch_size: int,
) -> tuple[int, int]:
    """``(pairs where the judge scores chosen above rejected, pairs)`` on held-out ``dataset``.

    Pairs are tokenised with the judge's tokenizer at its run's ``max_length`` as
    ``lit-align eval`` tokenises them (prompts cut to half of it at most, whatever the judge's
    own ``max_prompt_length``: closer to judging, which scores whole prompts); float32, and a
    tie is not a win.
    """
    scorer, tokenizer = load_reward_model(judge_dir, "float32", device)
    max_length = run_max_length(judge_dir)
    data = load_eval_data(dataset, split, tokenizer, 0, num_pairs, seed, max_length, on_bad_rows)
    rows = datasets.Dataset.from_list(data.pairs)
    collator = PreferenceCollator(tokenizer.pad_token_id)
    scores = score_rows(scorer, rows, list(range(len(rows))), collator, batch_size)
    return sum(chosen > rejected for chosen, rejected in scores.values()), len(scores)


@dataclass(frozen=True)
class StudyJudge:
    """The judge of a study, as its report states it.

    Attributes:
        kind: ``rule``, ``reward_model``, ``pairwise_llm``, or None (no judge).
        model: the judge's model directory or hub id (a trained judge's export).
        accuracy: a reward model's ``(correct, pairs)`` on the study's held-out data.
        config: the reward-model config the study trained, with ``args``.
        args: the extra ``lit-align fit`` arguments of that run.
        seed: the seed of that run.
        wall_time: seconds that run took.
        trained_on: the judge's training data.
        policies_trained_on: the SFT and preference runs' training data.
    """

    kind: str | None
    model: str | None = None
    accuracy: tuple[int, int] | None = None
    config: str | None = None
    args: tuple[str, ...] = ()
    seed: int | None = None
    wall_time: float | None = None
    trained_on: TrainingData | None = None
    policies_trained_on: tuple[TrainingData, ...] = ()

    def summary(self) -> dict[str, Any]:
        """Everything but the prompt sets, for ``results.json``."""
        data = [self.trained_on] if self.trained_on else []
        return {
            "kind": self.kind,
            "model": self.model,
            "heldout_reward_accuracy": self.accuracy,
            "config": self.config,
            "args": list(self.args),
            "seed": self.seed,
            "wall_time_s": self.wall_time,
            "trained_on": [d.describe() for d in data],
            "policies_trained_on": [d.describe() for d in self.policies_trained_on],
        }
