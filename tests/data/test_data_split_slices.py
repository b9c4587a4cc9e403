"""``name[slice]`` splits of local sources, as ``datasets`` slices hub splits."""

import gzip
import json

import pytest
from data_rows import GOOD, make_module, write_jsonl

from lit_align.data.formats import DataError
from lit_align.data.sources import load_split, split_names

ROWS = [{**GOOD, "prompt": f"sort: {i} 1\n"} for i in range(10)]


def _prompts(data) -> list[str]:
    return [row["prompt"] for row in data]


@pytest.fixture(params=["pairs.jsonl", "pairs.jsonl.gz"])
def pairs(request, tmp_path):
    """Ten rows whose prompts number them, as plain and as gzip-compressed JSON Lines."""
    path = tmp_path / request.param
    text = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)
    return str(path)


@pytest.mark.parametrize(
    "split, rows",
    [("train[:3]", range(0, 3)), ("train[7:]", range(7, 10)), ("train[-2:]", range(8, 10))],
)
def test_row_slices_of_a_local_file(pairs, split, rows):
    data, _ = load_split(pairs, split)
    assert _prompts(data) == [ROWS[i]["prompt"] for i in rows]


def test_percent_halves_are_disjoint_and_cover_the_file(pairs):
    first, _ = load_split(pairs, "train[:50%]")
    second, _ = load_split(pairs, "train[50%:]")
    assert (len(first), len(second)) == (5, 5)
    assert _prompts(first) + _prompts(second) == [r["prompt"] for r in ROWS]


def test_odd_row_count_halves_still_partition(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", ROWS[:7])
    first, _ = load_split(str(path), "train[:50%]")
    second, _ = load_split(str(path), "train[50%:]")
    assert len(first) + len(second) == 7
    assert not set(_prompts(first)) & set(_prompts(second))


def test_directory_split_is_matched_by_its_bare_name(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "heldout.jsonl", ROWS[:4])
    data, _ = load_split(str(tmp_path), "heldout[1:3]")
    assert _prompts(data) == [ROWS[1]["prompt"], ROWS[2]["prompt"]]
    joined, _ = load_split(str(tmp_path), "train[:2]+heldout[-1:]")
    assert _prompts(joined) == [ROWS[0]["prompt"], ROWS[1]["prompt"], ROWS[3]["prompt"]]


def test_slice_is_taken_after_skipped_lines(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(r) for r in ROWS[:4]]
    path.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]) + "\n")
    data, skipped = load_split(str(path), "train[2:]", skip_bad_lines=True)
    assert _prompts(data) == [ROWS[2]["prompt"], ROWS[3]["prompt"]] and len(skipped) == 1


def test_data_module_trains_and_validates_on_slices(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", ROWS)
    held = write_jsonl(tmp_path / "held.jsonl", ROWS)
    dm = make_module(path, train_split="train[:60%]", val_dataset=str(held), val_split="held[60%:]")
    assert (len(dm.train_data), len(dm.val_data)) == (6, 4)


@pytest.mark.parametrize("split", ["train[:5x]", "train[", "train[1:2:3]", "train[:50%"])
def test_malformed_slice_names_the_flag(split):
    with pytest.raises(DataError, match=r"^--data.train_split '.*' is not a split slice; write"):
        make_module("unused.jsonl", train_split=split)
    with pytest.raises(DataError, match=r"^--data.val_split .* e\.g\. 'train\[:500\]'"):
        make_module("unused.jsonl", val_split=split)


def test_plain_names_pass_through_unparsed():
    assert split_names("train-v2", "--data.train_split") == ["train-v2"]
    assert split_names("train[:10%]+test[5:]", "--split") == ["train", "test"]
