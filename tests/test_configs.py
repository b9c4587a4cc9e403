"""Every YAML in configs/ parses against the current signatures and instantiates."""

from pathlib import Path

import pytest

from lit_align.eval.cli import build_parser as eval_parser
from lit_align.lightning_cli import run_lightning_cli
from lit_align.study.run import build_parser as study_parser

CONFIGS = sorted(Path(__file__).resolve().parent.parent.joinpath("configs").glob("**/*.yaml"))
EVAL_CONFIGS = [p for p in CONFIGS if p.stem.endswith("eval")]
STUDY_CONFIGS = [p for p in CONFIGS if p.stem.startswith("study")]
FIT_CONFIGS = [p for p in CONFIGS if p not in EVAL_CONFIGS + STUDY_CONFIGS]


def test_configs_exist():
    assert FIT_CONFIGS and EVAL_CONFIGS and STUDY_CONFIGS


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: p.name)
def test_fit_config_instantiates(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # loggers and checkpoints would land here; nothing is run
    cli = run_lightning_cli(["--config", str(path)], run=False)
    assert cli.model.loss is not None
    assert cli.datamodule.hparams.batch_size >= 1


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: p.name)
def test_eval_config_parses(path):
    cfg = eval_parser().parse_args(["--config", str(path)])
    assert cfg.policy and cfg.baseline


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.name)
def test_study_config_parses(path):
    cfg = study_parser().parse_args(["--config", str(path)])
    assert "SPO" in cfg.losses and cfg.seeds
