"""Reference log-probs: the three modes, the precomputed cache, its key and its reuse."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from lit_align import reference
from lit_align.data.collate import Truncation
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.losses import BCO, BNF, DPO, KTO, SimPO
from lit_align.module import AlignmentModule

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers"),
    pytest.mark.filterwarnings("ignore:You have overridden `transfer_batch_to_device`"),
]


class LossRecorder(Callback):
    """Keeps the loss of every training step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].item())


def _data(tmp_path, **overrides) -> PreferenceDataModule:
    options = {"builtin_rows": 12, "max_length": 48, "batch_size": 4, "cache_dir": str(tmp_path)}
    return PreferenceDataModule(**{**options, **overrides})


def _fit(tiny_policy, tmp_path, mode: str, loss=None, **data) -> tuple[list, AlignmentModule]:
    seed_everything(0)
    loss = loss or DPO(beta=0.1)
    module = AlignmentModule(policy=tiny_policy, loss=loss, reference=mode)
    recorder = LossRecorder()
    trainer = Trainer(  # by epochs: the training loader is made before on_fit_start
        max_epochs=1,
        limit_val_batches=1,
        callbacks=[recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    datamodule = _data(tmp_path, **data)
    module.connect_data(datamodule)
    trainer.fit(module, datamodule=datamodule)
    return recorder.losses, module


def test_modes_follow_the_loss():
    assert reference.resolve_mode(None, DPO()) == "model"
    assert reference.resolve_mode("precomputed", DPO()) == "precomputed"
    assert reference.resolve_mode(None, SimPO()) == "none"
    with pytest.warns(UserWarning, match="--model.reference precomputed ignored"):
        assert reference.resolve_mode("precomputed", SimPO()) == "none"
    with pytest.raises(ValueError, match="--model.reference none: --model.loss DPO needs"):
        AlignmentModule(loss=DPO(), reference="none")
    with pytest.raises(ValueError, match="--model.reference must be one of"):
        reference.resolve_mode("cached", DPO())


@pytest.mark.parametrize(
    ("loss", "data"),
    [(DPO, {}), (BNF, {}), (BCO, {"unpair": True})],  # a new (possibly stateful) loss per fit
    ids=["DPO", "BNF-per-token", "BCO-unpaired"],
)
def test_precomputed_training_matches_on_the_fly_and_reuses_the_cache(
    tiny_policy, tmp_path, monkeypatch, loss, data
):
    """Same losses (1e-6) as the frozen model; the second run loads instead of scoring."""
    on_the_fly, _ = _fit(tiny_policy, tmp_path, "model", loss(), **data)
    cached, module = _fit(tiny_policy, tmp_path, "precomputed", loss(), **data)
    assert len(cached) == len(on_the_fly) >= 3
    assert module._reference == []  # the reference model was freed
    assert cached == pytest.approx(on_the_fly, abs=1e-6, rel=0)
    files = sorted(p.name for p in (tmp_path / "lit_align" / "reference").iterdir())
    assert [f.split("-")[0] for f in files] == ["train", "validation"]

    def no_scoring(*args, **kwargs):
        raise AssertionError("the cache should have been loaded")

    monkeypatch.setattr(reference, "_score", no_scoring)
    again, _ = _fit(tiny_policy, tmp_path, "precomputed", loss(), **data)
    assert again == cached


def test_token_level_loss_gets_per_token_reference(tiny_policy, tmp_path):
    """BNF reads per-token reference log-probs: the cached ones equal the model's."""
    data = _data(tmp_path, tokenizer="builtin:sort")
    data.setup("fit")
    torch.manual_seed(0)
    module = AlignmentModule(policy=tiny_policy, loss=BNF())
    module.configure_model()
    identity = reference.model_identity(None, None, module.reference.model)
    status = reference.precompute(module.reference, data, identity, True, torch.device("cpu"))
    assert status == {"train": "computed", "validation": "computed"}
    batch = next(iter(data.val_dataloader()))  # rows in their own order, with the columns
    with torch.no_grad():
        live = module.reference(batch, True, False)
    cached = batch.reference_logps
    for name in ("sum", "count", "token_logps"):
        torch.testing.assert_close(getattr(cached, name), getattr(live, name), atol=1e-5, rtol=0)
    (path,) = (tmp_path / "lit_align" / "reference").glob("validation-*")
    values = reference._load(path)  # the stated layout
    assert values["sum"].shape == (len(data.val_data), 2)
    assert values["lengths_chosen"].tolist() == [len(r) for r in data.val_data["chosen_ids"]]


def test_cache_key_changes_with_every_input(tiny_policy):
    torch.manual_seed(0)
    module = AlignmentModule(policy=tiny_policy)
    module.configure_model()
    model = module.reference.model
    identity = reference.model_identity("org/model", "main", model, dtype="float32")
    base = ("tok", "data", Truncation(64), False)
    keys = {reference.cache_key(identity, *base)}
    changed = [
        {**identity, "pretrained": "org/other"},
        {**identity, "revision": "v2"},
        {**identity, "config": {**identity["config"], "rope_theta": 1.0}},
        {**identity, "dtype": "bfloat16"},
    ]
    keys |= {reference.cache_key(c, *base) for c in changed}
    keys.add(reference.cache_key(identity, "other tok", *base[1:]))
    keys.add(reference.cache_key(identity, "tok", "other data", *base[2:]))
    keys.add(reference.cache_key(identity, "tok", "data", Truncation(32), False))
    keys.add(reference.cache_key(identity, "tok", "data", Truncation(64, 16), False))
    keys.add(reference.cache_key(identity, *base[:3], True))
    with torch.no_grad():
        model.model.norm.weight.mul_(1.01)  # weights changed in place, same name and config
    keys.add(reference.cache_key(reference.model_identity("org/model", "main", model), *base))
    assert len(keys) == 11
    same = reference.model_identity("org/model", "main", model)
    assert reference.cache_key(same, *base) in keys  # deterministic


def test_changed_truncation_recomputes(tiny_policy, tmp_path):
    _fit(tiny_policy, tmp_path, "precomputed")
    _fit(tiny_policy, tmp_path, "precomputed", max_length=40)
    files = list((tmp_path / "lit_align" / "reference").glob("train-*.safetensors"))
    assert len(files) == 2


def test_kl_rows_cannot_be_precomputed(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="precomputed cannot serve KL rows"):
        _fit(tiny_policy, tmp_path, "precomputed", loss=KTO(), unpair=True)
