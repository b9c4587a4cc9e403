"""The study trains its own reward-model judge on data disjoint from the policies'."""

import dataclasses
import json
from pathlib import Path

import pytest
from tiny import TINY as TINY_LLAMA

from lit_align.data.synthetic import make_rows
from lit_align.study.judge import StudyJudge, TrainingData, check_disjoint, training_data
from lit_align.study.report import interval_text, judge_section
from lit_align.study.run import StudyConfig, build_parser, run_study
from lit_align.study.stats import proportion

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY = json.dumps({**TINY_LLAMA, "num_hidden_layers": 1})
FAST = [
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
    "--trainer.max_epochs=1",
    "--data.batch_size=8",
]


def _pairs_file(tmp_path: Path) -> str:
    """Embedded-task pairs, one per prompt, so that halves of the file share no prompt."""
    rows = {r["prompt"]: r for r in make_rows(160, seed=0)}.values()
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _study(tmp_path: Path, judge_split: str, policy_split: str, **kwargs) -> StudyConfig:
    data = f"--data.dataset={_pairs_file(tmp_path)}"
    return StudyConfig(
        output=str(tmp_path / "study"),
        losses={"DPO": {"beta": 0.1}},
        sft_config=str(CONFIGS / "quickstart_sft.yaml"),
        preference_config=str(CONFIGS / "quickstart.yaml"),
        sft_args=[f"--model.policy.config={TINY}", data, policy_split, *FAST],
        preference_args=[data, policy_split, "--data.val_fraction=0.2", *FAST],
        judge_config=str(CONFIGS / "reward_model.yaml"),
        judge_args=[f"--model.init_args.policy.config={TINY}", data, judge_split, *FAST],
        num_prompts=6,
        num_pairs=8,
        generation={"max_new_tokens": 6, "do_sample": True},
        **kwargs,
    )


def test_study_trains_its_judge_on_a_disjoint_half_and_judges_with_it(tmp_path):
    cfg = _study(tmp_path, "--data.train_split=train[:50%]", "--data.train_split=train[50%:]")
    report = Path(run_study(cfg))
    export = tmp_path / "study" / "judge" / "export"
    assert (export / "config.json").is_file()
    results = json.loads((report.parent / "results.json").read_text())
    judge = results["judge"]
    assert judge["kind"] == "reward_model" and judge["model"] == str(export)
    assert judge["trained_on"] == [f"{cfg.judge_args[1][15:]} split 'train[:50%]' (80 prompts)"]
    correct, n = judge["heldout_reward_accuracy"]
    assert n == 8 and 0 <= correct <= n
    assert len(results["seeds"]["0"]["wins"]["DPO"]["SFT"]) == 6  # judged by the reward model
    text = report.read_text()
    assert "by the reward_model judge" in text
    assert "## Judge\n\nA reward model the study trained once (seed 0, " in text
    assert "split 'train[:50%]' (80 prompts): a split disjoint from the policies'" in text
    assert "split 'train[50%:]' (80 prompts)), no prompt shared" in text
    accuracy = interval_text(proportion(correct, n), counts=False)
    assert f"(the chosen response scored above the rejected one): {accuracy}." in text
    ready = dataclasses.replace(
        cfg,
        output=str(tmp_path / "again"),
        judge_config=None,
        judge="reward_model",
        judge_model=str(export),
    )
    again = Path(run_study(ready)).read_text()
    assert f"## Judge\n\nThe reward model {str(export)!r}, given ready" in again
    assert f"the rejected one): {accuracy}." in again  # the same judge on the same pairs


def test_overlapping_judge_data_fails_before_any_training(tmp_path):
    cfg = _study(tmp_path, "--data.train_split=train[:60%]", "--data.train_split=train[50%:]")
    match = (
        r"^judge_config '.*reward_model.yaml' trains on prompts the policies train on \(16 with "
        r"'.*quickstart_sft.yaml', 16 with '.*quickstart.yaml' of its 96, by prompt text or "
        r"prompt_id\); give the judge a disjoint split"
    )
    with pytest.raises(ValueError, match=match):
        run_study(cfg)
    assert not (tmp_path / "study").exists()


def test_judge_config_and_a_ready_judge_exclude_each_other(tmp_path):
    with pytest.raises(ValueError, match="trains the judge and judge_model 'rm' names a ready"):
        StudyConfig(judge_config="rm.yaml", judge_model="rm")
    with pytest.raises(ValueError, match="set judge to reward_model or leave it unset, got 'rule'"):
        StudyConfig(judge_config="rm.yaml", judge="rule")


def test_prompts_are_shared_by_text_or_by_prompt_id():
    def data(ids, texts):
        return TrainingData("c.yaml", "d.jsonl", "train", frozenset(ids), frozenset(texts))

    assert data({"a", "b"}, {"x", "y"}).shared(data({"b"}, {"z"})) == 1
    assert data(set(), {"x", "y"}).shared(data(set(), {"y", "x", "z"})) == 2
    assert data({"a"}, {"x"}).shared(data({"b"}, {"y"})) == 0


def test_report_states_a_ready_judge_and_no_section_for_other_judges():
    """30 of 40: 75.0%, Wilson 95% interval [59.8%, 85.8%]."""
    text = judge_section(StudyJudge("reward_model", "path/rm", (30, 40)), "held.jsonl")
    assert text.startswith("## Judge\n\nThe reward model 'path/rm', given ready (not trained")
    assert "on 'held.jsonl' (the chosen response scored above the rejected one): 75.0% " in text
    assert "[59.8%, 85.8%] (n=40)." in text
    assert judge_section(StudyJudge("rule"), "builtin:sort") == ""


def test_real_data_study_trains_its_judge_on_the_other_half(monkeypatch):
    """configs/study_ultrafeedback.yaml: judge on train[:500], policies on train[500:]."""
    monkeypatch.chdir(CONFIGS.parent)  # the configs name their files from the repository root
    cfg = build_parser().parse_args(["--config", "configs/study_ultrafeedback.yaml"])
    judge = training_data(cfg.judge_config, cfg.judge_args)
    policies = [
        training_data(cfg.sft_config, cfg.sft_args),
        training_data(cfg.preference_config, cfg.preference_args),
    ]
    check_disjoint(judge, policies)
    assert (
        judge.describe()
        == "tests/data/ultrafeedback_1k/train.jsonl.gz split 'train[:500]' (500 prompts)"
    )
    assert {p.split for p in policies} == {"train[500:]"} and len(judge.ids) == 500
