"""``lit-align study``: train SFT once, then every selected loss from it with the same budget and
seeds, judge every policy head to head on held-out prompts, and write a report directory.

Report directory: ``report.md`` (win rates vs SFT and vs DPO, reward accuracy, margin, log-prob
drift, gradient-norm statistics, instability events, findings), ``results.json`` (every number),
and one PNG per curve with every loss on shared axes. Runs live under ``<output>/seed<k>/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser
from transformers import AutoModelForCausalLM

from lit_align.data.datamodule import BUILTIN_TASK
from lit_align.eval.compare import JudgeKind, load_eval_data, make_judge, reward_accuracy
from lit_align.eval.generate import GenerationConfig, generate_responses
from lit_align.eval.judges import ScoringJudge
from lit_align.lightning_cli import run_lightning_cli
from lit_align.models import PolicyConfig, load_tokenizer
from lit_align.study import report
from lit_align.study.metrics import read_scalars, run_stats

DEFAULT_LOSSES = {
    "DPO": {"beta": 0.1},
    "SPO": {"beta": 1.0},
    "BNF": {},
    "IPO": {"beta": 0.1},
    "SimPO": {"beta": 2.0, "gamma": 1.0},
}


@dataclass(frozen=True)
class StudyConfig:
    """What the study trains and how it judges.

    Attributes:
        output: report directory; runs are written below it.
        losses: loss class name → its init args; each is trained from the same SFT model.
        seeds: one full study (SFT + every loss) per seed; the report gives mean ± std.
        sft_config: LightningCLI config of the SFT stage (must export with ``HFExport``).
        preference_config: LightningCLI config of every preference run.
        sft_args: extra ``lit-align fit`` arguments for the SFT run (e.g. a smaller budget).
        preference_args: extra arguments for every preference run.
        dataset: held-out evaluation data (``builtin:sort`` or any preference dataset; train on
            another dataset by adding ``--data.dataset=...`` to ``sft_args`` and
            ``preference_args``).
        split: split of ``dataset`` to evaluate on.
        judge: ``rule`` (the embedded task's default), ``reward_model`` or ``pairwise_llm``.
        judge_model: the reward model or judge LM for those judges.
        num_prompts: held-out prompts judged per policy.
        num_pairs: held-out pairs for reward accuracy (reference: the SFT policy).
        generation: sampling settings, shared by every policy.
    """

    output: str = "runs/study"
    losses: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_LOSSES))
    seeds: list[int] = field(default_factory=lambda: [0])
    sft_config: str = "configs/quickstart_sft.yaml"
    preference_config: str = "configs/quickstart.yaml"
    sft_args: list[str] = field(default_factory=list)
    preference_args: list[str] = field(default_factory=list)
    dataset: str = BUILTIN_TASK
    split: str = "validation"
    judge: JudgeKind | None = None
    judge_model: str | None = None
    num_prompts: int = 200
    num_pairs: int = 200
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(max_new_tokens=24, do_sample=True)
    )


def _fit(config: str, seed: int, root: str, version: str, extra: list[str]) -> str:
    """Run ``lit-align fit`` in-process; returns the run directory."""
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
    run_lightning_cli(args)
    export = os.path.join(root, version, "export")
    if not os.path.isdir(export):
        raise ValueError(f"{config}: the run wrote no {export}; add lit_align.callbacks.HFExport")
    return os.path.join(root, version)


def _loss_arg(name: str, init_args: dict[str, Any]) -> str:
    spec = {"class_path": f"lit_align.losses.{name}", "init_args": init_args}
    return f"--model.loss={json.dumps(spec)}"


def run_seed(cfg: StudyConfig, seed: int) -> dict[str, Any]:
    """SFT, every loss, then generation and judging; returns this seed's raw results."""
    root = os.path.join(cfg.output, f"seed{seed}")
    sft_dir = _fit(cfg.sft_config, seed, root, "sft", cfg.sft_args)
    sft_export = os.path.join(sft_dir, "export")
    runs = {
        name: _fit(
            cfg.preference_config,
            seed,
            root,
            name,
            [
                f"--model.policy.pretrained={sft_export}",
                _loss_arg(name, args),
                *cfg.preference_args,
            ],
        )
        for name, args in cfg.losses.items()
    }
    return {"runs": runs, **_judge(cfg, seed, sft_export, runs)}


def _judge(cfg: StudyConfig, seed: int, sft_export: str, runs: dict[str, str]) -> dict:
    judge = make_judge(cfg.judge, cfg.dataset, cfg.judge_model)
    tokenizer = load_tokenizer(PolicyConfig(pretrained=sft_export))
    data = load_eval_data(
        cfg.dataset,
        cfg.split,
        sft_export,
        tokenizer,
        cfg.num_prompts,
        cfg.num_pairs,
        seed,
        max_length=1024,
    )
    prompts = data.prompts
    sft = AutoModelForCausalLM.from_pretrained(sft_export).eval()
    responses = {"SFT": generate_responses(sft, tokenizer, prompts, cfg.generation)}
    accuracy = {}
    for name, run_dir in runs.items():
        policy = AutoModelForCausalLM.from_pretrained(os.path.join(run_dir, "export")).eval()
        responses[name] = generate_responses(policy, tokenizer, prompts, cfg.generation)
        accuracy[name] = reward_accuracy(policy, sft, data.pairs, tokenizer.pad_token_id)
    wins = {
        name: {
            other: sum(judge.compare(prompts, responses[name], responses[other])) / len(prompts)
            for other in ("SFT", "DPO")
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
    os.makedirs(cfg.output, exist_ok=True)
    results = {seed: run_seed(cfg, seed) for seed in cfg.seeds}
    stats = {name: [run_stats(r["runs"][name]) for r in results.values()] for name in cfg.losses}
    wins = {
        name: {
            other: [r["wins"][name][other] for r in results.values() if other in r["wins"][name]]
            for other in ("SFT", "DPO")
        }
        for name in cfg.losses
    }
    first = results[cfg.seeds[0]]["runs"]
    plots = report.plot_curves({n: read_scalars(d) for n, d in first.items()}, cfg.output)
    text = _report_text(cfg, stats, wins, plots)
    path = os.path.join(cfg.output, "report.md")
    with open(path, "w") as f:
        f.write(text)
    raw = {
        "config": dataclasses.asdict(cfg),
        "seeds": results,
        "stats": {n: [dataclasses.asdict(s) for s in v] for n, v in stats.items()},
    }
    with open(os.path.join(cfg.output, "results.json"), "w") as f:
        json.dump(raw, f, indent=2, default=str)
    return path


def _report_text(cfg, stats, wins, plots) -> str:
    images = "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots)
    return (
        f"# Loss comparison\n\nLosses {', '.join(cfg.losses)} trained from one SFT model per "
        f"seed (seeds {cfg.seeds}); win rates judged on {cfg.num_prompts} held-out prompts of "
        f"{cfg.dataset!r} by the {cfg.judge or 'rule'} judge (ties count half). Δ is the "
        "policy/reference log-ratio margin in nats (comparable across losses); reward margins "
        "are in each loss's own units (β·Δ); log-prob drifts are in nats.\n\n"
        f"{report.table(stats, wins)}\n\n## Findings\n\n{report.findings(stats, wins)}\n\n"
        f"## Curves\n\n{images}\n"
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
    cfg = parser.instantiate_classes(parser.parse_args(argv))
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(StudyConfig)}
    path = run_study(StudyConfig(**fields))
    print(open(path).read())
    print(f"report written to {path}")
    return path
