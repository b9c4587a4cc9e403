"""``lit-align study``: train SFT once, then every selected loss from it with the same budget and
seeds, judge every policy head to head on held-out prompts, and write a report directory.

Report directory: ``report.md`` (win rates vs SFT and vs DPO with Wilson intervals and W/T/L,
held-out reward accuracy, log-ratio margin, log-prob drift, gradient-norm statistics,
instability events, wall time, findings that say what is inside the noise, the judge),
``results.json`` (every number), ``win_rates.png`` and one PNG per curve with every loss on
shared axes. Runs live under ``<output>/seed<k>/``; a judge the study trains (``judge_config``,
see :mod:`lit_align.study.judge`) under ``<output>/judge/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from lit_align.data.datamodule import BUILTIN_TASK
from lit_align.eval.compare import (
    BadRows,
    JudgeKind,
    check_judge,
    load_eval_data,
    make_judge,
    resolve_split,
    reward_accuracy,
)
from lit_align.eval.generate import generate_responses, generation_config
from lit_align.eval.judges import ScoringJudge
from lit_align.eval.runtime import (
    load_policy,
    resolve_device,
    resolve_dtype,
    run_config,
    run_max_length,
)
from lit_align.lightning_cli import run_lightning_cli
from lit_align.models import PolicyConfig, load_tokenizer
from lit_align.study import plots, report
from lit_align.study.judge import (
    StudyJudge,
    TrainingData,
    check_disjoint,
    judge_accuracy,
    training_data,
)
from lit_align.study.metrics import read_scalars, run_stats

DEFAULT_LOSSES = {
    "DPO": {"beta": 0.1},
    "SPO": {"beta": 1.0},
    "BNF": {},
    "IPO": {"beta": 0.1},
    "SimPO": {"beta": 2.0, "gamma": 1.0},
}
OPPONENTS = ("SFT", "DPO")


@dataclass(frozen=True)
class StudyConfig:
    """What the study trains and how it judges.

    Attributes:
        output: report directory; runs are written below it.
        losses: loss class name → its init args; each is trained from the same SFT model.
        seeds: one full study (SFT + every loss) per seed; the report pools or averages them.
        sft_config: LightningCLI config of the SFT stage (must export with ``HFExport``).
        preference_config: LightningCLI config of every preference run.
        sft_args: extra ``lit-align fit`` arguments for the SFT run (e.g. a smaller budget).
        preference_args: extra arguments for every preference run.
        dataset: held-out evaluation data (``builtin:sort`` or any preference dataset; train on
            another dataset by adding ``--data.dataset=...`` to ``sft_args`` and
            ``preference_args``).
        split: split of ``dataset`` (default as in ``lit-align eval``).
        on_bad_rows: ``error`` or ``skip`` malformed evaluation rows.
        judge: ``rule`` (the embedded task's default), ``reward_model`` or ``pairwise_llm``;
            none elsewhere: held-out reward accuracy and training statistics only.
        judge_model: a ready reward model or judge LM for those judges.
        judge_config: LightningCLI config of a reward model (``lit_align.reward.RewardModule``,
            exporting with ``HFExport``) that the study trains once, before SFT, and judges
            with (``judge: reward_model``); its training prompts must be disjoint from the SFT
            and preference runs'. Excludes ``judge_model``.
        judge_args: extra ``lit-align fit`` arguments for the judge's run (e.g. its split).
        num_prompts: held-out prompts judged per policy.
        num_pairs: held-out pairs for reward accuracy (reference: the SFT policy).
        max_length: tokens per evaluation pair (default: the SFT run's ``data.max_length``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ...
        dtype: ``auto`` (bfloat16 on a GPU, else float32) or a torch dtype name.
        batch_size: prompts per ``generate`` call.
        generation: transformers ``GenerationConfig`` fields, shared by every policy.
    """

    output: str = "runs/study"
    losses: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_LOSSES))
    seeds: list[int] = field(default_factory=lambda: [0])
    sft_config: str = "configs/quickstart_sft.yaml"
    preference_config: str = "configs/quickstart.yaml"
    sft_args: list[str] = field(default_factory=list)
    preference_args: list[str] = field(default_factory=list)
    dataset: str = BUILTIN_TASK
    split: str | None = None
    on_bad_rows: BadRows = "error"
    judge: JudgeKind | None = None
    judge_model: str | None = None
    judge_config: str | None = None
    judge_args: list[str] = field(default_factory=list)
    num_prompts: int = 200
    num_pairs: int = 200
    max_length: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 32
    generation: dict[str, Any] = field(
        default_factory=lambda: {"max_new_tokens": 24, "do_sample": True, "top_k": 0}
    )

    def __post_init__(self) -> None:
        if self.judge_config is None:
            return
        if self.judge_model is not None:
            raise ValueError(
                f"judge_config {self.judge_config!r} trains the judge and judge_model "
                f"{self.judge_model!r} names a ready one; set only one of them"
            )
        if self.judge not in (None, "reward_model"):
            raise ValueError(
                f"judge_config trains a reward model: set judge to reward_model or leave it "
                f"unset, got {self.judge!r}"
            )


def _fit(config: str, seed: int, root: str, version: str, extra: list[str]) -> tuple[str, float]:
    """Run ``lit-align fit`` in-process; returns the run directory and its wall time (s)."""
    args = [
        "fit",
        f"--config={config}",
        f"--seed_everything={seed}",
        f"--trainer.logger.init_args.save_dir={root}",
        "--trainer.logger.init_args.name=",
        f"--trainer.logger.init_args.version={version}",
        "--overwrite=true",  # the study owns its output directory: a rerun replaces its runs
        *extra,
    ]
    start = time.perf_counter()
    run_lightning_cli(args)
    seconds = time.perf_counter() - start
    export = os.path.join(root, version, "export")
    if not os.path.isdir(export):
        raise ValueError(f"{config}: the run wrote no {export}; add lit_align.callbacks.HFExport")
    return os.path.join(root, version), seconds


def _loss_arg(name: str, init_args: dict[str, Any]) -> str:
    spec = {"class_path": f"lit_align.losses.{name}", "init_args": init_args}
    return f"--model.loss={json.dumps(spec)}"


def run_seed(cfg: StudyConfig, seed: int, judge: StudyJudge) -> dict[str, Any]:
    """SFT, every loss, then generation and judging; returns this seed's raw results."""
    root = os.path.join(cfg.output, f"seed{seed}")
    sft_dir, sft_time = _fit(cfg.sft_config, seed, root, "sft", cfg.sft_args)
    sft_export = os.path.join(sft_dir, "export")
    runs, wall = {}, {"SFT": sft_time}
    for name, args in cfg.losses.items():
        extra = [f"--model.policy.pretrained={sft_export}", _loss_arg(name, args)]
        runs[name], wall[name] = _fit(
            cfg.preference_config, seed, root, name, [*extra, *cfg.preference_args]
        )
    return {"runs": runs, "wall_time_s": wall, **_judge(cfg, seed, sft_export, runs, judge)}


def _judge(
    cfg: StudyConfig, seed: int, sft_export: str, runs: dict[str, str], study_judge: StudyJudge
) -> dict:
    """Held-out reward accuracy of every policy and, with a judge, judged outcomes."""
    device, dtype = resolve_device(cfg.device), resolve_dtype(cfg.dtype, cfg.device)
    judge = make_judge(study_judge.kind, cfg.dataset, study_judge.model, device=device, dtype=dtype)
    tokenizer = load_tokenizer(PolicyConfig(pretrained=sft_export))
    max_length = cfg.max_length or run_max_length(sft_export)
    split = resolve_split(cfg.dataset, cfg.split)
    data = load_eval_data(
        cfg.dataset, split, tokenizer, cfg.num_prompts, cfg.num_pairs, seed, max_length,
        cfg.on_bad_rows,
    )  # fmt: skip
    sft = load_policy(sft_export, device, dtype)
    options = (generation_config(cfg.generation), seed, cfg.batch_size)
    responses, accuracy = {}, {}
    if judge is not None:
        responses["SFT"] = generate_responses(sft, tokenizer, data.prompts, *options)
    for name, run_dir in runs.items():
        policy = load_policy(os.path.join(run_dir, "export"), device, dtype)
        acc = reward_accuracy(policy, sft, data.pairs, tokenizer.pad_token_id)
        accuracy[name] = [round(acc * len(data.pairs)), len(data.pairs)]
        if judge is not None:
            responses[name] = generate_responses(policy, tokenizer, data.prompts, *options)
    if judge is None:
        return {"wins": {}, "judged_score": {}, "heldout_reward_accuracy": accuracy}
    prompts = data.conversations
    wins = {
        name: {
            other: judge.compare(prompts, responses[name], responses[other])
            for other in OPPONENTS
            if other in responses and other != name
        }
        for name in runs
    }
    scores = {}
    if isinstance(judge, ScoringJudge):
        scores = {n: sum(judge.score(prompts, r)) / len(prompts) for n, r in responses.items()}
    return {"wins": wins, "judged_score": scores, "heldout_reward_accuracy": accuracy}


def run_study(cfg: StudyConfig) -> str:
    """Run every seed and write the report; returns the path of ``report.md``."""
    judge_data = _judge_data(cfg)  # checked before hours of training
    generation_config(cfg.generation)
    os.makedirs(cfg.output, exist_ok=True)
    judge = _prepare_judge(cfg, judge_data)
    results = {seed: run_seed(cfg, seed, judge) for seed in cfg.seeds}
    per_loss = {name: _loss_results(name, results) for name in cfg.losses}
    first = results[cfg.seeds[0]]["runs"]
    clip = _clip_value(next(iter(first.values())))
    rates = {n: {o: w for o in OPPONENTS if (w := r.win(o))} for n, r in per_loss.items()}
    figures = [plots.plot_win_rates(rates, cfg.output)] if any(rates.values()) else []
    curves = {n: read_scalars(d) for n, d in first.items()}
    figures += plots.plot_curves(curves, cfg.output, clip)
    path = os.path.join(cfg.output, "report.md")
    with open(path, "w") as f:
        f.write(_report_text(cfg, per_loss, figures, clip, results, judge))
    raw = {
        "config": dataclasses.asdict(cfg),
        "judge": judge.summary(),
        "seeds": results,
        "stats": {n: [dataclasses.asdict(s) for s in r.runs] for n, r in per_loss.items()},
    }
    with open(os.path.join(cfg.output, "results.json"), "w") as f:
        json.dump(raw, f, indent=2, default=str)
    return path


def _judge_data(cfg: StudyConfig) -> tuple[TrainingData, tuple[TrainingData, ...]] | None:
    """The training data of the judge to train and of the policies, checked disjoint; None
    (the judge settings checked) when the study trains no judge."""
    if cfg.judge_config is None:
        check_judge(cfg.judge, cfg.dataset, cfg.judge_model)
        return None
    judge = training_data(cfg.judge_config, cfg.judge_args)
    policies = (
        training_data(cfg.sft_config, cfg.sft_args),
        training_data(cfg.preference_config, cfg.preference_args),
    )
    check_disjoint(judge, list(policies))
    return judge, policies


def _prepare_judge(
    cfg: StudyConfig, data: tuple[TrainingData, tuple[TrainingData, ...]] | None
) -> StudyJudge:
    """Train the judge (once, with the first seed) when asked; measure a reward model's
    held-out reward accuracy on the study's data."""
    judge = StudyJudge(cfg.judge, cfg.judge_model)
    if data is not None:
        seed = cfg.seeds[0]
        run_dir, seconds = _fit(cfg.judge_config, seed, cfg.output, "judge", cfg.judge_args)
        judge = StudyJudge(
            kind="reward_model",
            model=os.path.join(run_dir, "export"),
            config=cfg.judge_config,
            args=tuple(cfg.judge_args),
            seed=seed,
            wall_time=seconds,
            trained_on=data[0],
            policies_trained_on=data[1],
        )
    if judge.kind != "reward_model":
        return judge
    split = resolve_split(cfg.dataset, cfg.split)
    options = (cfg.seeds[0], cfg.on_bad_rows, resolve_device(cfg.device), cfg.batch_size)
    accuracy = judge_accuracy(judge.model, cfg.dataset, split, cfg.num_pairs, *options)
    return dataclasses.replace(judge, accuracy=accuracy)


def _loss_results(name: str, results: dict[int, dict]) -> report.LossResults:
    seeds = list(results.values())
    return report.LossResults(
        runs=[run_stats(r["runs"][name]) for r in seeds],
        wins={
            o: [r["wins"][name][o] for r in seeds if o in r["wins"].get(name, {})]
            for o in OPPONENTS
        },
        accuracy=[tuple(r["heldout_reward_accuracy"][name]) for r in seeds],
        wall_time=[r["wall_time_s"][name] for r in seeds],
    )


def _clip_value(run_dir: str) -> float | None:
    """``trainer.gradient_clip_val`` of a run's saved config."""
    trainer = (run_config(run_dir) or {}).get("trainer") or {}
    return trainer.get("gradient_clip_val")


def _report_text(cfg, per_loss, figures, clip, results, study_judge: StudyJudge) -> str:
    images = "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures)
    sft_time = sum(r["wall_time_s"]["SFT"] for r in results.values()) / len(results)
    judge = study_judge.kind or ("rule" if cfg.dataset == BUILTIN_TASK else None)
    judged = (
        f"win rates judged on {cfg.num_prompts} held-out prompts by the {judge} judge (ties "
        "half; pooled over seeds, 95% Wilson interval, W/T/L counts)"
        if judge
        else "no judge (win rates n/a)"
    )
    return (
        f"# Loss comparison\n\nLosses {', '.join(cfg.losses)} trained from one SFT model per "
        f"seed (seeds {cfg.seeds}) on the same budget; evaluated on {cfg.dataset!r}: {judged}. "
        "The held-out reward accuracy is the fraction of the held-out pairs (up to "
        f"{cfg.num_pairs} per seed; n in each cell) whose policy/SFT log-ratio margin is "
        "positive, pooled with its Wilson interval. "
        "Δ is that log-ratio margin in nats (β-free, comparable across losses; reference-free "
        "losses have none); other cells are means over seeds ± the 95% t half-width (a single "
        f"seed shows no interval). SFT took {sft_time:.0f} s per seed.\n\n"
        f"{report.table(per_loss)}\n\n## Findings\n\n{report.findings(per_loss, clip)}\n\n"
        f"{report.judge_section(study_judge, cfg.dataset)}"
        f"## Figures\n\n{images}\n"
    )


def build_parser() -> ArgumentParser:
    """The ``lit-align study`` parser: ``--config`` plus every :class:`StudyConfig` field."""
    parser = ArgumentParser(prog="lit-align study", description=__doc__)
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(StudyConfig, nested_key=None, as_group=False)
    return parser


def main(argv: list[str] | None = None) -> str:
    """Entry point of ``lit-align study``."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(StudyConfig)}
    path = run_study(StudyConfig(**fields))
    print(open(path).read())
    print(f"report written to {path}")
    return path
