"""Every command of README.md runs as written (on a small budget), in the order a reader runs them.

Each ``lit-align ...`` / ``python -m ...`` command of the README (code blocks and inline code with
at least one option; a bare ``lit-align eval`` is a mention) must appear in :data:`HOW`, which
says what a test run appends to keep it cheap (fewer steps and rows) and which placeholders
(``runs/x``, ``A``, ``B``) it fills in; a command added to the README without an entry here
fails the test.
"""

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from lit_align import docs, real_model
from lit_align.cli import main

ROOT = Path(__file__).resolve().parent.parent
FIT = ["--trainer.max_steps=2", "--data.builtin_rows=64", "--data.batch_size=8"]
STUDY_FIT = [*FIT, "--trainer.log_every_n_steps=1", "--trainer.val_check_interval=2"]
EVAL = ["--num_prompts=4", "--num_pairs=4", "--generation.max_new_tokens=4"]
TINY_STUDY = [
    "--losses={DPO: {beta: 0.1}}",
    "--num_prompts=4",
    "--num_pairs=4",
    "--generation.max_new_tokens=4",
    f"--sft_args={STUDY_FIT}",
    f"--preference_args={STUDY_FIT}",
]
# README command -> (placeholders to fill in, arguments appended)
HOW = {
    "lit-align fit --config configs/quickstart_sft.yaml": ({}, FIT),
    "lit-align fit --config configs/quickstart.yaml": ({}, FIT),
    "lit-align eval --config configs/quickstart_eval.yaml": ({}, EVAL),
    "lit-align --help": ({}, []),
    "lit-align fit --config configs/quickstart.yaml --model.loss DPO --model.loss.beta 0.1 "
    "--trainer.logger.init_args.version dpo": ({}, FIT),
    "lit-align fit --config configs/quickstart.yaml --print_config": ({}, []),
    "lit-align fit --model.loss.help lit_align.losses.SPO": ({}, []),
    "lit-align fit --config my.yaml --ckpt_path last": ({}, [*FIT, "--trainer.max_steps=3"]),
    "python -m lit_align.docs": ({}, ["--output=losses.md"]),
    "lit-align export --config runs/x/config.yaml --ckpt_path runs/x/checkpoints/last.ckpt "
    "--output hf/": ({"runs/x": "runs/quickstart/dpo"}, []),
    "lit-align eval --policy runs/x/dpo/export --baseline runs/x/sft/export --dataset "
    "tests/data/ultrafeedback/heldout.jsonl --on_bad_rows skip": (
        {"runs/x": "runs/quickstart"},
        ["--max_length=48"],
    ),
    "lit-align study --config configs/study.yaml": ({}, TINY_STUDY),
    "python -m lit_align.real_model": ({}, []),
    'lit-align fit --model.policy.pretrained "$(lit-align real-model)" --data.dataset '
    "tests/data/ultrafeedback/train.jsonl --data.format conversational --data.on_bad_rows skip "
    "--data.max_length 256 --data.batch_size 2 --trainer.max_steps 10": (
        {"$(lit-align real-model)": "REAL_MODEL"},
        ["--trainer.max_steps=1", "--data.max_length=48"],
    ),
    "lit-align fit --config configs/reward_model.yaml": ({}, FIT),
    "lit-align score --model runs/reward/sort/export --dataset pairs.jsonl --output "
    "pairs_scored.jsonl": ({}, []),
}
# README commands a test cannot run here, and why
NOT_RUN = {
    "lit-align eval ... --judge reward_model --judge_model path/to/rm --generation.max_new_tokens "
    "256 --generation.do_sample true --generation.top_p 0.9": "options to add to an eval command",
    "lit-align real-model [--output DIR]": "a usage line; `python -m lit_align.real_model` runs",
    "lit-align fit --config configs/reward_model_smollm2.yaml": "reads a hub model and data set",
    "lit-align score --model runs/reward/smollm2/export --dataset Anthropic/hh-rlhf --split "
    "'train[50%:]' --output data/hh-rlhf_scored.parquet --max_length 1024": "reads a hub data set",
    "lit-align fit --config configs/spo_scored.yaml": "trains on the hub data set scored above",
}


def readme_commands() -> list[str]:
    """The README's commands in order, continuation lines joined and comments dropped."""
    text = (ROOT / "README.md").read_text()
    found: list[tuple[int, str]] = []
    for block in re.finditer(r"```bash\n(.*?)```", text, re.S):
        joined = block.group(1).replace("\\\n", " ")
        for offset, line in enumerate(joined.splitlines()):
            line = re.sub(r"\s+#.*", "", line).strip()
            if line.startswith(("lit-align ", "python -m ")):
                found.append((block.start() + offset, " ".join(line.split())))
    for inline in re.finditer(r"`(python -m [^`]+|lit-align [^`]*-[^`]*)`", text):
        found.append((inline.start(), inline.group(1)))
    return list(dict.fromkeys(command for _, command in sorted(found)))


def test_every_readme_command_has_a_recipe():
    assert set(readme_commands()) == set(HOW) | set(NOT_RUN)
    assert not set(HOW) & set(NOT_RUN)


def _run(command: str) -> None:
    if command in NOT_RUN:
        return
    fill, extra = HOW[command]
    if fill.get("$(lit-align real-model)") == "REAL_MODEL":
        fill = {"$(lit-align real-model)": str(real_model.materialise())}
    args = [fill.get(a, a) for a in shlex.split(command)]
    args = [re.sub(r"^runs/x/", fill.get("runs/x", "runs/x") + "/", a) for a in args]
    if args[:3] == ["python", "-m", "lit_align.real_model"]:
        real_model.main(args[3:] + extra)
        return
    if args[:2] == ["python", "-m"]:
        assert args[2] == "lit_align.docs"
        assert docs.main(args[3:] + extra) == 0
        return
    try:
        main(args[1:] + extra)
    except SystemExit as exit_:  # --help and --print_config exit 0 after printing
        assert exit_.code in (0, None), command


def test_readme_commands_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    shutil.copy(tmp_path / "configs" / "quickstart_sft.yaml", tmp_path / "my.yaml")
    excerpt = Path("tests", "data", "ultrafeedback")
    shutil.copytree(ROOT / excerpt, tmp_path / excerpt)
    pairs = [{"prompt": f"sort: {i} 1\n", "chosen": f"1 {i}", "rejected": f"{i} 1"} for i in (3, 5)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    for command in readme_commands():
        _run(command)
    runs = tmp_path / "runs" / "quickstart"
    assert sorted(p.name for p in runs.iterdir()) == ["dpo", "eval", "sft", "spo"]
    assert (runs / "sft" / "checkpoints" / "epoch=0-step=3.ckpt").is_file()  # resumed in place
    assert (tmp_path / "hf" / "config.json").is_file()
    assert (tmp_path / "runs" / "study" / "report.md").is_file()
    assert (tmp_path / "runs" / "reward" / "sort" / "export" / "config.json").is_file()
    scored = [json.loads(line) for line in (tmp_path / "pairs_scored.jsonl").open()]
    assert len(scored) == 2 and all(isinstance(r["score_chosen"], float) for r in scored)
    out = capsys.readouterr().out
    assert "commands:" in out and "report written to runs/study/report.md" in out


@pytest.mark.parametrize("command", ["lit-align fit --config configs/quickstart.yaml"])
def test_a_readme_stage_run_twice_is_refused_not_mixed(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    _run("lit-align fit --config configs/quickstart_sft.yaml")
    _run(command)
    with pytest.raises(SystemExit) as exit_:
        main([*shlex.split(command)[1:], *FIT])
    assert exit_.value.code == 1
    assert "pass --overwrite true" in capsys.readouterr().err
