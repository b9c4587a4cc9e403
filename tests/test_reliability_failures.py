"""Clear failures: each case the user can fix ends with one line naming the flag or file, exit 1.

Every case runs ``lit-align`` in-process through its entry point (``lit_align.cli.main``), so
what is checked is what a user sees: the exit code and stderr (one error line, no traceback).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed"))  # shared test helpers
from resume_runs import write_config  # noqa: E402
from tiny import TINY  # noqa: E402

from lit_align.cli import main  # noqa: E402


def lit_align(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run ``lit-align *args``; (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lit-align", *args])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code or 0
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    """The error line; fails unless the output ends with exactly it and the hint."""
    assert "Traceback" not in err
    *_, line, hint = err.strip().splitlines()
    assert hint == "(--debug or LIT_ALIGN_DEBUG=1 shows the traceback)"
    assert line.startswith("lit-align: error: ")
    return line


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """The resume tests' run (tiny Llama, embedded task), 2 steps, ``last.ckpt`` every step."""
    tmp = tmp_path_factory.mktemp("failures")
    return write_config(tmp / "config.yaml", 1, ranks=1, trainer={"max_steps": 2})


def fit_args(config: Path, root: Path, *args: str) -> list[str]:
    return ["fit", f"--config={config}", f"--trainer.default_root_dir={root}", *args]


def test_empty_ckpt_file(monkeypatch, capsys, config, tmp_path):
    (tmp_path / "empty.ckpt").touch()
    code, err = lit_align(
        monkeypatch, capsys, *fit_args(config, tmp_path, f"--ckpt_path={tmp_path}/empty.ckpt")
    )
    assert code == 1
    assert one_error_line(err) == (
        f"lit-align: error: --ckpt_path {tmp_path}/empty.ckpt is an empty file (0 bytes): "
        "an interrupted copy?"
    )


def test_sharded_checkpoint_without_fsdp2(monkeypatch, capsys, config, tmp_path):
    dcp.save({"w": torch.ones(2)}, checkpoint_id=tmp_path / "sharded.ckpt", no_dist=True)
    code, err = lit_align(
        monkeypatch, capsys, *fit_args(config, tmp_path, f"--ckpt_path={tmp_path}/sharded.ckpt")
    )
    assert code == 1
    assert (
        "is a sharded checkpoint directory: resume it with --trainer.strategy=fsdp2"
        in one_error_line(err)
    )


def test_ckpt_path_last_with_nothing_to_resume(monkeypatch, capsys, config, tmp_path):
    code, err = lit_align(monkeypatch, capsys, *fit_args(config, tmp_path, "--ckpt_path=last"))
    assert code == 1
    assert one_error_line(err) == (
        f"lit-align: error: --ckpt_path last: no last*.ckpt to resume in {tmp_path}/checkpoints; "
        "pass --ckpt_path last_or_new to start a new run when there is none"
    )


def test_last_or_new_starts_anew_then_resumes(monkeypatch, capsys, config, tmp_path):
    assert (
        lit_align(monkeypatch, capsys, *fit_args(config, tmp_path, "--ckpt_path=last_or_new"))[0]
        == 0
    )
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    more = fit_args(config, tmp_path, "--ckpt_path=last_or_new", "--trainer.max_steps=3")
    assert lit_align(monkeypatch, capsys, *more)[0] == 0
    assert torch.load(last, weights_only=True)["global_step"] == 3  # resumed at 2, one more step


def test_leftovers_of_an_interrupted_save_are_cleaned_and_old_restored(
    monkeypatch, capsys, config, tmp_path
):
    assert lit_align(monkeypatch, capsys, *fit_args(config, tmp_path))[0] == 0
    ckpts = tmp_path / "checkpoints"
    (ckpts / "last.ckpt").rename(ckpts / "last.ckpt.old")  # killed between the two renames
    (ckpts / "last.ckpt.partial").mkdir()  # a sharded save that never finished
    (ckpts / "last.ckpt.partial" / "__0_0.distcp").write_bytes(b"half")
    more = fit_args(config, tmp_path, "--ckpt_path=last", "--trainer.max_steps=3")
    assert lit_align(monkeypatch, capsys, *more)[0] == 0
    assert sorted(p.name for p in ckpts.glob("last*")) == ["last.ckpt"]
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == 3


def _tiny_pretrained(path: Path, vocab_size: int) -> Path:
    config = AutoConfig.for_model("llama", vocab_size=vocab_size, **TINY)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def test_tokenizer_larger_than_the_model_vocabulary(monkeypatch, capsys, caplog, config, tmp_path):
    model = _tiny_pretrained(tmp_path / "model", vocab_size=32)  # the task tokenizer has 60
    args = fit_args(config, tmp_path, f"--model.policy.pretrained={model}")
    code, err = lit_align(monkeypatch, capsys, *args)
    assert code == 1
    assert one_error_line(err) == (
        f"lit-align: error: --model.policy.tokenizer 'builtin:sort' has 60 tokens, more than the "
        f"32 embedding rows of --model.policy.pretrained '{model}': use the model's own tokenizer "
        "(leave --model.policy.tokenizer unset) or one of its size"
    )
    assert "pairs kept" not in caplog.text  # refused before the data was tokenised


def test_bit_rotted_weights_are_refused_when_loaded(monkeypatch, capsys, config, tmp_path):
    model = _tiny_pretrained(tmp_path / "model", vocab_size=60)
    weights = load_file(model / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    weights[name] = weights[name].clone()
    weights[name].view(torch.int32)[0, :3] = -1  # bytes 0xFF: NaN as float32
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    code, err = lit_align(
        monkeypatch, capsys, *fit_args(config, tmp_path, f"--model.policy.pretrained={model}")
    )
    assert code == 1
    assert one_error_line(err) == (
        f"lit-align: error: --model.policy.pretrained {model}: non-finite weights in "
        f"{name} (3 of 2048 values); the weight files are damaged"
    )


def test_export_refuses_a_non_empty_output_unless_overwrite(monkeypatch, capsys, config, tmp_path):
    assert lit_align(monkeypatch, capsys, *fit_args(config, tmp_path))[0] == 0
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_config.json").write_text(json.dumps({"stale": True}))
    export = [
        "export",
        f"--config={config}",
        f"--ckpt_path={tmp_path}/checkpoints/last.ckpt",
        f"--output={out}",
    ]
    code, err = lit_align(monkeypatch, capsys, *export)
    assert code == 1
    assert one_error_line(err) == (
        f"lit-align: error: --output {out} is not empty: choose a new directory, or pass "
        "--overwrite=true to replace its contents"
    )
    assert lit_align(monkeypatch, capsys, *export, "--overwrite=true")[0] == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()


def test_orphaned_top_k_checkpoints_are_removed_on_resume(
    monkeypatch, capsys, caplog, config, tmp_path
):
    """Killed while writing ``last.ckpt`` at step 2, after the top-k ``step=2`` file: the state
    resumed from (step 1) never saw that file; it is removed, not kept beside a ``-v1`` copy."""
    one = fit_args(config, tmp_path, "--trainer.max_steps=1")
    assert lit_align(monkeypatch, capsys, *one)[0] == 0
    ckpts = tmp_path / "checkpoints"
    shutil.copy(ckpts / "last.ckpt", tmp_path / "last-at-step-1.ckpt")
    two = fit_args(config, tmp_path, "--ckpt_path=last", "--trainer.max_steps=2")
    assert lit_align(monkeypatch, capsys, *two)[0] == 0
    shutil.copy(tmp_path / "last-at-step-1.ckpt", ckpts / "last.ckpt")  # the save at 2 was lost
    more = fit_args(config, tmp_path, "--ckpt_path=last", "--trainer.max_steps=3")
    assert lit_align(monkeypatch, capsys, *more)[0] == 0
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == [f"epoch=0-step={n}.ckpt" for n in (1, 2, 3)] + ["last.ckpt"]
    assert "epoch=0-step=2.ckpt: saved after step 1 by a run that did not finish" in caplog.text


def _rot(checkpoint: Path, out: Path) -> str:
    """``checkpoint`` with one weight's first values set to bytes 0xFF (NaN), saved to ``out``."""
    state = torch.load(checkpoint, weights_only=True)
    name = "policy.model.model.layers.0.mlp.up_proj.weight"
    state["state_dict"][name].view(torch.int32)[0, :2] = -1
    torch.save(state, out)
    return name


def test_bit_rotted_checkpoint_is_refused_on_resume_and_export(
    monkeypatch, capsys, config, tmp_path
):
    assert lit_align(monkeypatch, capsys, *fit_args(config, tmp_path))[0] == 0
    rotten = tmp_path / "rotten.ckpt"
    name = _rot(tmp_path / "checkpoints" / "last.ckpt", rotten)
    more = fit_args(config, tmp_path / "again", f"--ckpt_path={rotten}", "--trainer.max_steps=3")
    code, err = lit_align(monkeypatch, capsys, *more)
    assert code == 1
    assert one_error_line(err) == (
        f"lit-align: error: loaded from {rotten}: non-finite weights in {name} (2 of 2048 "
        "values); the checkpoint or weight files are damaged"
    )
    export = ["export", f"--config={config}", f"--ckpt_path={rotten}", f"--output={tmp_path}/x"]
    code, err = lit_align(monkeypatch, capsys, *export)
    assert code == 1
    assert one_error_line(err) == (
        f"lit-align: error: --ckpt_path {rotten}: non-finite weights in "
        f"{name} (2 of 2048 values)"
    )
