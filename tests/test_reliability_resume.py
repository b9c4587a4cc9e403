"""Resume checks what it resumes: another loss, other data or other data settings are refused
with the list of differences, unless ``ResumeGuard(allow_changes=True)`` (then logged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny import TINY

from lit_align.callbacks import ResumeGuard
from lit_align.callbacks.resume_guard import ResumeChangedError
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.losses import DPO, SPO
from lit_align.models import PolicyConfig
from lit_align.module import AlignmentModule

ROW = {"prompt": "sort: 3 1 2\n", "chosen": "1 2 3", "rejected": "3 1 2"}


def _rows(path: Path, answer: str) -> Path:
    rows = [{**ROW, "prompt": f"sort: {i} 9\n", "chosen": f"{i} 9 {answer}"} for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _fit(tmp: Path, data: Path, steps: int, loss=None, ckpt_path=None, callbacks=(), **data_args):
    seed_everything(0)
    module = AlignmentModule(
        policy=PolicyConfig(tokenizer="builtin:sort", config=dict(TINY)), loss=loss or DPO(beta=0.1)
    )
    datamodule = PreferenceDataModule(dataset=str(data), batch_size=4, max_length=64, **data_args)
    checkpoint = ModelCheckpoint(dirpath=tmp / "ckpt", every_n_train_steps=1, save_last=True)
    trainer = Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        callbacks=[checkpoint, *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    module.connect_data(datamodule)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer


@pytest.fixture
def saved(tmp_path) -> dict:
    data = _rows(tmp_path / "train.jsonl", "x")
    _fit(tmp_path, data, steps=1)
    return {"tmp": tmp_path, "data": data, "last": str(tmp_path / "ckpt" / "last.ckpt")}


def test_resume_with_the_same_settings_goes_on(saved):
    trainer = _fit(saved["tmp"], saved["data"], steps=2, ckpt_path=saved["last"])
    assert trainer.global_step == 2


def test_another_loss_is_refused(saved):
    dpo, spo = r"lit_align\.losses\.dpo\.DPO\(beta=0\.1.*\)", r"lit_align\.losses\.spo\.SPO\("
    with pytest.raises(ResumeChangedError, match=rf"other settings: loss: {dpo} -> {spo}"):
        _fit(saved["tmp"], saved["data"], steps=2, loss=SPO(), ckpt_path=saved["last"])


def test_other_rows_of_the_same_count_are_refused(saved):
    _rows(saved["data"], "y")  # same file, same row count, other contents
    with pytest.raises(ResumeChangedError, match=r"data fingerprint: [0-9a-f]{16} -> [0-9a-f]{16}"):
        _fit(saved["tmp"], saved["data"], steps=2, ckpt_path=saved["last"])


def test_changed_label_noise_is_refused_with_the_allow_flag_named(saved):
    message = r"--data\.label_noise: 0\.0 -> 0\.5.*--trainer\.callbacks\.allow_changes=true"
    with pytest.raises(ResumeChangedError, match=message):
        _fit(saved["tmp"], saved["data"], steps=2, ckpt_path=saved["last"], label_noise=0.5)


def test_allowed_changes_resume_and_are_logged(saved):
    guard = [ResumeGuard(allow_changes=True)]
    with pytest.warns(UserWarning, match=r"changed settings: .*--data\.label_noise: 0\.0 -> 0\.5"):
        trainer = _fit(
            saved["tmp"],
            saved["data"],
            2,
            ckpt_path=saved["last"],
            callbacks=guard,
            label_noise=0.5,
        )
    assert trainer.global_step == 2
