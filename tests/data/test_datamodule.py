"""PreferenceDataModule: sources, formats, truncation, collation and clear errors on bad rows."""

import json

import pytest
import torch

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.data.formats import DataError
from lit_align.data.synthetic import build_task_tokenizer

GOOD = {"prompt": "sort: 3 1 2\n", "chosen": "1 2 3", "rejected": "3 2 1"}


def _module(path, **kwargs) -> PreferenceDataModule:
    dm = PreferenceDataModule(dataset=str(path), tokenizer="builtin:sort", **kwargs)
    dm.setup("fit")
    return dm


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loads_local_jsonl_and_batches(tmp_path):
    dm = _module(_write_jsonl(tmp_path / "d.jsonl", [GOOD] * 6), batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch.input_ids.shape[0] == 8 and batch.paired
    assert batch.score_chosen is None
    assert "train: 6 pairs kept of 6" in dm.summary()


def test_parquet_and_val_fraction(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([GOOD] * 10).to_parquet(str(tmp_path / "d.parquet"))
    dm = _module(tmp_path / "d.parquet", val_fraction=0.2)
    assert len(dm.train_data) == 8 and len(dm.val_data) == 2


def test_builtin_task_has_scores_and_validation():
    dm = PreferenceDataModule(tokenizer="builtin:sort", builtin_rows=40, batch_size=5)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert torch.all(batch.score_chosen == 10.0) and torch.all(batch.score_rejected < 10.0)
    assert len(dm.val_data) == 4


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        ({"prompt": "sort: 1 2\n", "chosen": "1 2"}, "rejected", "missing"),
        ({**GOOD, "chosen": ""}, "chosen", "empty response"),
        ({**GOOD, "rejected": 7}, "rejected", "expected a string, got int"),
        ({**GOOD, "prompt": "  "}, "prompt", "empty prompt"),
        ({**GOOD, "rejected": GOOD["chosen"]}, "rejected", "identical to 'chosen'"),
        ({**GOOD, "score_chosen": 1.0}, "score_rejected", "missing while"),
    ],
)
def test_bad_row_names_split_row_and_field(tmp_path, row, field, problem):
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, row])
    with pytest.raises(DataError, match=rf"split 'train', row 2, field '{field}': {problem}"):
        _module(path)


def test_missing_file_and_empty_dataset(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _module(tmp_path / "nope" / "d.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty|cannot load"):
        _module(tmp_path / "empty.jsonl")


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
        dm = _module(_write_jsonl(tmp_path / f"c{i}.jsonl", [r]), batch_size=1)
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
