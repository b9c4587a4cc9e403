"""Run directories: never reused by accident, resumed in place, removed after an early failure."""

import os
from pathlib import Path

import pytest

from lit_align.cli import main
from lit_align.runs import RunDirectoryError, claim, resumed_version

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart_sft.yaml"
CHEAP = ["--trainer.max_steps=2", "--data.builtin_rows=64", "--data.batch_size=8"]


def _fit(*extra: str) -> None:
    main(["fit", f"--config={CONFIG}", *CHEAP, *extra])


def test_claim_new_refused_overwritten_and_resumed(tmp_path):
    run = tmp_path / "runs" / "x"
    assert claim(run, None, overwrite=False).state == "new"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_text("old")
    with pytest.raises(
        RunDirectoryError,
        match=r"already holds a run \(checkpoints\); pass "
        r"--overwrite true .* --ckpt_path .*last.ckpt to resume",
    ):
        claim(run, None, overwrite=False)
    assert claim(run, str(run / "checkpoints" / "last.ckpt"), overwrite=False).state == "resumed"
    assert claim(run, "last", overwrite=False).state == "resumed"
    other = tmp_path / "elsewhere.ckpt"
    with pytest.raises(RunDirectoryError):  # starting from another run's weights is not resuming
        claim(run, str(other), overwrite=False)
    assert claim(run, None, overwrite=True).state == "overwritten"
    assert not run.exists()  # the old run's files are gone before the new one writes


def test_resumed_version_from_a_path_or_last(tmp_path):
    root = tmp_path / "runs" / "name"
    for version, mtime in (("version_0", 100), ("version_1", 200)):
        last = root / version / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True)
        last.write_text("")
        os.utime(last, (mtime, mtime))
    assert resumed_version(root, str(root / "version_0" / "checkpoints" / "last.ckpt")) == (
        "version_0"
    )
    assert resumed_version(root, "last") == "version_1"  # the newest
    assert resumed_version(root, str(tmp_path / "other.ckpt")) is None
    assert resumed_version(root, None) is None


def test_second_run_into_a_named_directory_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _fit()
    run = tmp_path / "runs" / "quickstart" / "sft"
    first = sorted(p.name for p in run.iterdir())
    with pytest.raises(SystemExit) as exit_:
        _fit("--model.loss=DPO")
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    message = "lit-align: error: run directory runs/quickstart/sft already holds a run"
    assert err[-2].startswith(message)
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in run.iterdir()) == first  # nothing written into it
    _fit("--overwrite=true", "--trainer.max_steps=3")
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["epoch=0-step=3.ckpt", "last.ckpt"]  # no last-v1.ckpt, no step-2 file
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


def test_unset_version_gets_the_next_free_directory_and_resume_stays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unset = "--trainer.logger.init_args.version=null"
    _fit(unset)
    _fit(unset)
    root = tmp_path / "runs" / "quickstart"
    assert sorted(p.name for p in root.iterdir()) == ["version_0", "version_1"]
    _fit(unset, "--trainer.max_steps=4", "--ckpt_path=last")  # resumes version_1 in place
    assert sorted(p.name for p in root.iterdir()) == ["version_0", "version_1"]
    ckpts = sorted(p.name for p in (root / "version_1" / "checkpoints").iterdir())
    assert ckpts == ["epoch=0-step=4.ckpt", "last.ckpt"]  # no last-v1.ckpt beside it


def test_a_run_failing_while_loading_data_leaves_no_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "sort: 1\\n", "chosen": "1", "rejected": 2}\n')
    with pytest.raises(SystemExit):
        _fit("--data.dataset=bad.jsonl", "--data.val_fraction=0")
    assert "--data.on_bad_rows skip" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "quickstart" / "sft").exists()
    monkeypatch.setenv("LIT_ALIGN_DEBUG", "1")  # asked for: the traceback
    with pytest.raises(ValueError, match="field 'rejected'"):
        _fit("--data.dataset=bad.jsonl")
