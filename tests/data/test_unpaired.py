"""Unpaired batches: labels, KTO's mismatched KL rows, and the data layout checked against the
loss's capabilities."""


import lightning.pytorch as pl
import pytest
import torch
from data_rows import GOOD, write_jsonl

from lit_align.data.collate import PreferenceCollator
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.formats import DataError
from lit_align.losses import BCO, DPO, KTO
from lit_align.module import AlignmentModule

ROWS = [
    {"prompt_ids": [5, 6], "completion_ids": [7, 2], "label": True},
    {"prompt_ids": [8], "completion_ids": [9, 9, 2], "label": False},
    {"prompt_ids": [4, 4, 4], "completion_ids": [3], "label": True},
]
UNPAIRED = [
    {"prompt": "sort: 2 1\n", "completion": "1 2", "label": True},
    {"prompt": "sort: 3 1\n", "completion": "3 1", "label": False},
]


def test_unpaired_batch_without_kl_rows():
    batch = PreferenceCollator(pad_token_id=0)(ROWS[:2])
    assert batch.labels.tolist() == [True, False] and not batch.paired
    assert batch.input_ids.tolist() == [[5, 6, 7, 2], [8, 9, 9, 2]]
    assert batch.response_mask.int().tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]


def test_kl_rows_put_completion_i_under_prompt_i_plus_1():
    batch = PreferenceCollator(pad_token_id=0, kl_rows=True, max_length=4)(ROWS)
    assert batch.labels.tolist() == [True, False, True]  # (N,) for 2N rows
    assert batch.input_ids.tolist() == [
        [5, 6, 7, 2],
        [8, 9, 9, 2],
        [4, 4, 4, 3],
        [8, 7, 2, 0],  # completion 0 under prompt 1
        [4, 4, 4, 9],  # completion 1 under prompt 2, cut to max_length = 4
        [5, 6, 3, 0],  # completion 2 under prompt 0 (wraps around)
    ]
    assert batch.response_mask[3:].int().tolist() == [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]


def _with_loss(path, loss, **kwargs):
    dm = PreferenceDataModule(dataset=str(path), tokenizer="builtin:sort", **kwargs)
    dm.connect(loss)
    dm.setup("fit")
    return dm


def test_kl_rows_follow_the_loss_and_the_flag(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", UNPAIRED * 2)
    dm = _with_loss(path, KTO(), batch_size=4)
    assert dm.kl_rows and "unpaired, with KL rows" in dm.summary()
    batch = next(iter(dm.train_dataloader()))
    assert batch.input_ids.shape[0] == 8 and batch.labels.shape == (4,)
    assert not _with_loss(path, BCO()).kl_rows
    assert not _with_loss(path, KTO(), kl_rows=False).kl_rows
    with pytest.raises(ValueError, match="--data.batch_size must be >= 2 with KL rows"):
        _with_loss(path, KTO(), batch_size=1)


def test_data_layout_must_suit_the_loss(tmp_path):
    unpaired = write_jsonl(tmp_path / "u.jsonl", UNPAIRED)
    paired = write_jsonl(tmp_path / "p.jsonl", [GOOD])
    with pytest.raises(DataError, match="--model.loss DPO needs paired data, but the data is"):
        _with_loss(unpaired, DPO())
    with pytest.raises(DataError, match="--model.loss KTO needs unpaired data.*--data.unpair true"):
        _with_loss(paired, KTO())
    with pytest.raises(ValueError, match="--data.kl_rows applies to unpaired data only"):
        _with_loss(paired, DPO(), kl_rows=True)
    assert _with_loss(paired, KTO(), unpair=True, batch_size=2).kl_rows


def test_kto_trains_on_unpaired_rows(tmp_path, tiny_policy):
    """End to end: unpaired file -> KL rows -> AlignmentModule with KTO, two optimizer steps."""
    path = write_jsonl(tmp_path / "u.jsonl", UNPAIRED * 4)
    data = PreferenceDataModule(dataset=str(path), batch_size=4, max_length=32)
    model = AlignmentModule(policy=tiny_policy, loss=KTO())
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model.connect_data(data)
    trainer.fit(model, datamodule=data)
    assert data.kl_rows and trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["loss"])
    assert "kto/kl" in trainer.callback_metrics
