"""Compressed files, separate validation data, and local splits that are never the training rows."""

import bz2
import gzip
import json
import lzma

import pytest
from data_rows import GOOD, make_module, write_jsonl

from lit_align.data.formats import DataError
from lit_align.data.sources import COMPRESSED, file_type


def _rows(n: int, offset: int = 0) -> list[dict]:
    return [{**GOOD, "prompt": f"sort: {i} 1\n"} for i in range(offset, offset + n)]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.mark.parametrize(
    "ext, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)]
)
def test_compressed_jsonl_loads_like_plain_jsonl(tmp_path, ext, compress):
    path = tmp_path / f"pairs.jsonl{ext}"
    path.write_bytes(compress(_jsonl(_rows(5))))
    assert len(make_module(path).train_data) == 5


def test_file_types_of_compressed_names():
    assert file_type("a.jsonl.gz") == file_type("a.json.xz") == "json"
    assert file_type("a.parquet.gz") is None  # datasets reads compressed JSON only
    assert ".gz" in COMPRESSED and ".bz2" in COMPRESSED and ".xz" in COMPRESSED


def test_bad_line_of_a_compressed_file_is_named(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress(_jsonl(_rows(2)) + b"{not json\n"))
    with pytest.raises(DataError, match=r"pairs\.jsonl\.gz, line 3: not valid JSON"):
        make_module(path)


def test_val_dataset_names_separate_validation_data(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", _rows(6))
    held = write_jsonl(tmp_path / "held.jsonl", _rows(3, offset=100))
    dm = make_module(train, val_dataset=str(held))
    assert (len(dm.train_data), len(dm.val_data)) == (6, 3)
    with pytest.raises(ValueError, match="--data.val_dataset and --data.val_fraction"):
        make_module(train, val_dataset=str(held), val_fraction=0.5)


def test_val_split_of_a_single_file_is_refused_not_the_training_rows(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", _rows(6))
    with pytest.raises(DataError, match=r"holds one split .* no split 'test'.*--data.val_dataset"):
        make_module(path, val_split="test")


def test_directory_splits_come_from_file_names(tmp_path):
    write_jsonl(tmp_path / "train-00000.jsonl", _rows(4))
    write_jsonl(tmp_path / "train-00001.jsonl", _rows(2, offset=10))
    write_jsonl(tmp_path / "validation.jsonl", _rows(3, offset=100))
    dm = make_module(tmp_path, val_split="validation")
    assert (len(dm.train_data), len(dm.val_data)) == (6, 3)
    with pytest.raises(DataError, match=r"has splits \['train', 'validation'\], no split 'test'"):
        make_module(tmp_path, val_split="test")


def test_bad_row_error_names_the_flag_that_skips_it(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [GOOD, {**GOOD, "chosen": None}])
    with pytest.raises(DataError, match=r"row 1, field 'chosen'.*--data.on_bad_rows skip"):
        make_module(path)
