"""Sampling: seeded order, length grouping, sharding by rank, and mid-epoch resumption that
neither repeats nor skips a batch, at the loader level and through Lightning checkpoints."""

import random
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.connectors.data_connector import _DataConnector
from torch.utils.data import DataLoader

from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.sampler import ResumableSampler


def _batches(sampler):
    order = list(sampler)
    return [order[i : i + sampler.batch_size] for i in range(0, len(order), sampler.batch_size)]


def test_order_is_a_function_of_seed_and_epoch():
    a, b, c = (
        ResumableSampler(50, 4, seed=1),
        ResumableSampler(50, 4, seed=1),
        ResumableSampler(50, 4),
    )
    assert list(a) == list(b) != list(c)
    first = list(a)
    a.set_epoch(1)
    assert sorted(list(a)) == sorted(first) == list(range(50)) and list(a) != first
    assert list(ResumableSampler(50, 4, shuffle=False)) == list(range(50))


def test_group_by_length_cuts_padding_and_keeps_every_row_once():
    lengths = [random.Random(i).randint(5, 500) for i in range(1000)]

    def padding(sampler):
        return sum(
            max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b)
            for b in _batches(sampler)
        )

    grouped = ResumableSampler(1000, 8, lengths, seed=3)
    plain = ResumableSampler(1000, 8, seed=3)
    assert sorted(grouped) == list(range(1000))
    assert padding(grouped) < padding(plain) / 10
    odd = ResumableSampler(1001, 8, lengths + [7], seed=3)
    assert [len(b) for b in _batches(odd)] == [8] * 125 + [1]  # only the last batch is short
    odd.set_epoch(1)
    assert list(odd) != list(ResumableSampler(1001, 8, lengths + [7], seed=3))


@pytest.mark.parametrize("lengths", [None, list(range(21))], ids=["plain", "grouped"])
def test_shards_by_rank(lengths, monkeypatch):
    shards = [list(ResumableSampler(21, 4, lengths, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 11  # 21 rows padded to 22 by repetition
    assert set(shards[0]) | set(shards[1]) == set(range(21))
    assert len(set(shards[0]) & set(shards[1])) <= 1
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    assert list(ResumableSampler(21, 4, lengths)) == shards[1]


def _module(batch_size=4, **kwargs):
    dm = PreferenceDataModule(
        tokenizer="builtin:sort", builtin_rows=40, batch_size=batch_size, **kwargs
    )
    dm.setup("fit")
    return dm


def _ids(batches):
    return [b.input_ids.tolist() for b in batches]


@pytest.mark.parametrize(
    "options",
    [{}, {"group_by_length": True}, {"num_workers": 2}],
    ids=["plain", "grouped", "workers"],
)
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(options):
    reference = _module(**options).train_dataloader()
    reference.sampler.set_epoch(1)
    full = _ids(reference)
    assert len(full) == 10

    loader = _module(**options).train_dataloader()
    loader.sampler.set_epoch(1)
    it = iter(loader)
    seen = _ids(next(it) for _ in range(3))
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batches"] == 3

    fresh = _module(**options).train_dataloader()
    fresh.load_state_dict(state)
    assert len(fresh) == 10  # the full epoch, as Lightning counts it
    assert seen + _ids(fresh) == full
    assert fresh.state_dict()["batches"] == 10
    fresh.sampler.set_epoch(2)  # the next epoch starts from its first batch
    assert len(_ids(fresh)) == 10


def test_resume_mid_epoch_with_another_layout_is_refused():
    loader = _module().train_dataloader()
    next(iter(loader))
    with pytest.raises(ValueError, match=r"cannot resume .* --data.batch_size, --data.seed"):
        _module(batch_size=5).train_dataloader().load_state_dict(loader.state_dict())
    list(loader)  # at the end of the epoch the position fits any layout (e.g. another world size)
    other = _module(batch_size=5).train_dataloader()
    other.load_state_dict(loader.state_dict())
    other.sampler.set_epoch(1)
    assert len(list(other)) == 8


def test_lightning_keeps_the_rank_aware_sampler_when_distributed():
    """Lightning 2.6 injects a DistributedSampler only where ``_requires_distributed_sampler``."""
    trainer = SimpleNamespace(
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True, is_distributed=True)
    )
    connector = _DataConnector(trainer)
    assert not connector._requires_distributed_sampler(_module().train_dataloader())
    assert connector._requires_distributed_sampler(DataLoader(range(4)))  # a plain loader


class _Recorder(pl.LightningModule):
    """A one-parameter model that records the batches it trains on."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device)

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.input_ids.tolist())
        return (self.w - batch.input_ids.float().mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, ckpt_path=None, **trainer_args):
    model = _Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **trainer_args,
    )
    trainer.fit(model, datamodule=_module(group_by_length=True), ckpt_path=ckpt_path)
    return model.seen


def test_lightning_checkpoint_resumes_mid_epoch(tmp_path, recwarn):
    full = _fit(tmp_path / "full", enable_checkpointing=False)
    assert len(full) == 20 and full[:10] != full[10:]
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=13, save_top_k=-1)
    first = _fit(tmp_path / "first", max_steps=15, callbacks=[saver])  # dies after 15 steps
    assert first == full[:15]
    rest = _fit(tmp_path / "rest", ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=13.ckpt"))
    assert rest == full[13:]  # batch 14 onwards: none repeated, none skipped
    assert not [w for w in recwarn if "not resumable" in str(w.message)]
