"""PreferenceDataModule: sources, truncation, collation, summary; bad rows are in
test_bad_input.py, formats in test_formats.py."""

from types import SimpleNamespace

import datasets
import pytest
import torch
from data_rows import GOOD, make_module, write_jsonl

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.formats import DataError
from lit_align.data.synthetic import build_task_tokenizer


def test_loads_local_jsonl_and_batches(tmp_path):
    dm = make_module(write_jsonl(tmp_path / "d.jsonl", [GOOD] * 6), batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch.input_ids.shape[0] == 8 and batch.paired
    assert batch.score_chosen is None
    assert "train: 6 pairs kept of 6" in dm.summary()


def test_parquet_and_val_fraction(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([GOOD] * 10).to_parquet(str(tmp_path / "d.parquet"))
    dm = make_module(tmp_path / "d.parquet", val_fraction=0.2)
    assert len(dm.train_data) == 8 and len(dm.val_data) == 2


def test_directory_of_files_and_saved_dataset_dict(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [GOOD] * 2)
    write_jsonl(folder / "b.jsonl", [GOOD] * 3)
    assert len(make_module(folder).train_data) == 5
    splits = {"train": [GOOD] * 4, "test": [GOOD] * 2}
    saved = datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()})
    saved.save_to_disk(tmp_path / "saved")
    dm = make_module(tmp_path / "saved", val_split="test")
    assert (len(dm.train_data), len(dm.val_data)) == (4, 2)
    with pytest.raises(DataError, match=r"no split 'dev' \(has \['test', 'train'\]\)"):
        make_module(tmp_path / "saved", val_split="dev")


def test_builtin_task_has_scores_and_validation():
    dm = PreferenceDataModule(tokenizer="builtin:sort", builtin_rows=40, batch_size=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert torch.all(batch.score_chosen == 10.0) and torch.all(batch.score_rejected < 10.0)
    assert len(dm.val_data) == 4


def test_conversational_rows_use_the_chat_template(tmp_path):
    row = {
        "prompt": [{"role": "user", "content": "sort: 2 1"}],
        "chosen": [{"role": "assistant", "content": "1 2"}],
        "rejected": [{"role": "assistant", "content": "2 1"}],
    }
    whole = {  # UltraFeedback style: full conversations
        "prompt": "sort: 2 1",
        "chosen": row["prompt"] + row["chosen"],
        "rejected": row["prompt"] + row["rejected"],
    }
    for i, r in enumerate((row, whole)):
        dm = make_module(write_jsonl(tmp_path / f"c{i}.jsonl", [r]), batch_size=1)
        tok = dm.tokenizer
        ex = dm.train_data[0]
        assert tok.decode(ex["prompt_ids"]) == "user: sort: 2 1\nassistant: "
        assert tok.decode(ex["chosen_ids"][:-1]) == "1 2\n"
        assert ex["chosen_ids"][-1] == tok.eos_token_id


def test_truncation_keeps_prompt_end_and_response_start():
    tok = build_task_tokenizer()
    row = {"prompt": "abcdefgh", "chosen": "123456", "rejected": "xyz"}
    out = tokenize_row(row, tok, Truncation(max_length=8, max_prompt_length=4))
    assert tok.decode(out["prompt_ids"]) == "efgh"
    assert tok.decode(out["chosen_ids"]) == "1234"
    assert out["rejected_ids"] == tok("xyz", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert out["truncated"] and not out["dropped"]


def test_truncation_validates_flags():
    with pytest.raises(ValueError, match="--data.max_prompt_length must be in"):
        Truncation(max_length=8, max_prompt_length=8)


def test_collator_masks_prompt_and_padding():
    rows = [
        {"prompt_ids": [5, 6], "chosen_ids": [7, 2], "rejected_ids": [8]},
        {"prompt_ids": [5], "chosen_ids": [9], "rejected_ids": [9, 9, 2]},
    ]
    batch = PreferenceCollator(pad_token_id=0)(rows)
    assert batch.input_ids.tolist() == [[5, 6, 7, 2], [5, 9, 0, 0], [5, 6, 8, 0], [5, 9, 9, 2]]
    assert batch.response_mask.int().tolist() == [
        [0, 0, 1, 1],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 1, 1, 1],
    ]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1] * 4]


def test_label_noise_swaps_a_seeded_fraction_of_training_pairs():
    clean = PreferenceDataModule(tokenizer="builtin:sort", builtin_rows=100)
    noisy = PreferenceDataModule(tokenizer="builtin:sort", builtin_rows=100, label_noise=0.3)
    clean.setup("fit")
    noisy.setup("fit")
    swapped = [
        a["chosen_ids"] == b["rejected_ids"] and a["rejected_ids"] == b["chosen_ids"]
        for a, b in zip(clean.train_data, noisy.train_data)
    ]
    assert sum(swapped) == 30
    assert sum(r["score_chosen"] < 10.0 for r in noisy.train_data) == 30
    assert noisy.val_data["chosen_ids"] == clean.val_data["chosen_ids"]
    with pytest.raises(ValueError, match="--data.label_noise must be in"):
        PreferenceDataModule(label_noise=1.5)


def test_summary_counts_are_logged_to_the_trainer_logger(tmp_path):
    logged = {}
    logger = SimpleNamespace(log_metrics=lambda metrics, step: logged.update(metrics))
    dm = PreferenceDataModule(dataset=str(write_jsonl(tmp_path / "d.jsonl", [GOOD] * 4)))
    dm.tokenizer = build_task_tokenizer()
    dm.trainer = SimpleNamespace(lightning_module=None, logger=logger)
    dm.setup("fit")
    assert logged == {
        "data/train_kept": 4,
        "data/train_bad": 0,
        "data/train_truncated": 0,
        "data/train_dropped": 0,
    }


def test_hub_source_arguments_are_passed_through(monkeypatch):
    calls = []

    def fake_load(name, subset, split, revision, cache_dir):
        calls.append((name, subset, split, revision, cache_dir))
        return datasets.Dataset.from_list([GOOD] * 2)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    dm = PreferenceDataModule(
        dataset="org/prefs",
        subset="en",
        revision="v1",
        val_split="test",
        cache_dir="/c",
        tokenizer="builtin:sort",
    )
    dm.setup("fit")
    assert calls == [
        ("org/prefs", "en", "train", "v1", "/c"),
        ("org/prefs", "en", "test", "v1", "/c"),
    ]
    assert len(dm.val_data) == 2
