"""Malformed input: a clear error naming source, split, row and field, or (``on_bad_rows=skip``)
skipped and counted in the start-up summary; and loading never touches the user's files."""

import json
import re

import datasets
import huggingface_hub
import pytest
from data_rows import GOOD, make_module, write_jsonl

from lit_align.data.formats import DataError

USER = [{"role": "user", "content": "sort: 2 1"}]
CONV = {
    "prompt": USER,
    "chosen": [{"role": "assistant", "content": "1 2"}],
    "rejected": [{"role": "assistant", "content": "2 1"}],
}
UNPAIRED = {"prompt": "sort: 2 1\n", "completion": "1 2", "label": True}

# (good row of the file, bad row, field named, problem) — the bad row is row 2
BAD_ROWS = [
    (GOOD, {"prompt": "sort: 1 2\n", "chosen": "1 2"}, "rejected", "missing"),
    (GOOD, {**GOOD, "chosen": None}, "chosen", "missing"),
    (GOOD, {**GOOD, "rejected": 7}, "rejected", "expected a string, got int"),
    (GOOD, {**GOOD, "prompt": "  "}, "prompt", "empty prompt"),
    (GOOD, {**GOOD, "chosen": ""}, "chosen", "empty response"),
    (GOOD, {**GOOD, "rejected": GOOD["chosen"]}, "rejected", "identical to 'chosen'"),
    (GOOD, {**GOOD, "score_chosen": 1.0}, "score_rejected", "missing while"),
    (GOOD, {**GOOD, "score_chosen": [9], "score_rejected": 1}, "score_chosen", "expected a number"),
    (CONV, {**CONV, "chosen": USER}, "chosen", "the conversation does not end with an assistant"),
    (CONV, {**CONV, "chosen": [{"role": "assistant"}]}, "chosen", "message 0 is not a"),
    (CONV, {**CONV, "prompt": []}, "prompt", "expected a non-empty list of messages"),
    (
        CONV,
        {"chosen": USER + CONV["chosen"], "rejected": USER * 2 + CONV["rejected"]},
        "rejected",
        "its conversation history differs from 'chosen'",
    ),
    (UNPAIRED, {**UNPAIRED, "label": 1}, "label", r"expected a boolean \(true/false\), got int 1"),
    (UNPAIRED, {**UNPAIRED, "label": "yes"}, "label", "expected a boolean .* got str 'yes'"),
    (UNPAIRED, {**UNPAIRED, "completion": " "}, "completion", "empty response"),
]


def _ids(case):
    return f"{case[2]}-{case[3][:24]}"


@pytest.mark.parametrize(("good", "bad", "field", "problem"), BAD_ROWS, ids=map(_ids, BAD_ROWS))
def test_bad_row_names_source_split_row_and_field(tmp_path, good, bad, field, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", [good, good, bad, good])
    where = rf"{re.escape(repr(str(path)))}, split 'train', row 2, field '{field}': {problem}"
    with pytest.raises(DataError, match=where):
        make_module(path)


def test_skip_drops_bad_rows_and_counts_them_in_the_summary(tmp_path):
    bad = [b for g, b, *_ in BAD_ROWS if g is GOOD]
    path = write_jsonl(tmp_path / "mixed.jsonl", [GOOD, *bad, GOOD])
    dm = make_module(path, on_bad_rows="skip")
    assert len(dm.train_data) == 2 and dm.stats["train"].bad == len(bad)
    summary = dm.summary()
    assert f"train: 2 pairs kept of {len(bad) + 2} rows ({len(bad)} bad skipped" in summary
    assert "    skipped row 1, field 'rejected': missing" in summary
    assert f"... and {len(bad) - 3} more bad rows" in summary


def test_rows_held_out_for_validation_are_named_by_their_row_in_the_file(tmp_path):
    rows = [GOOD] * 10
    rows[4], rows[7] = {**GOOD, "chosen": ""}, {**GOOD, "prompt": ""}
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    dm = make_module(path, on_bad_rows="skip", val_fraction=0.5, train_split="train")
    errors = sorted(dm.stats["train"].errors + dm.stats["validation"].errors)
    assert errors == [
        "row 4, field 'chosen': empty response",
        "row 7, field 'prompt': empty prompt",
    ]
    with pytest.raises(DataError, match=r"split 'train', row (4, field 'chosen'|7, field 'pro)"):
        make_module(path, val_fraction=0.5)


def test_skip_with_every_row_bad_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{**UNPAIRED, "label": 0}] * 2)
    with pytest.raises(DataError, match=r"no row left of 2 \(2 bad, .*first: row 0, field 'label'"):
        make_module(path, on_bad_rows="skip")


def test_invalid_utf8_and_invalid_json_name_the_file_and_line(tmp_path):
    good = json.dumps(GOOD).encode()
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(good + b"\n" + good.replace(b"3 2 1", b"caf\xe9") + b"\n")
    with pytest.raises(DataError, match=r"latin1.jsonl, line 2: not valid UTF-8 \(byte 0xe9"):
        make_module(path)
    path = tmp_path / "broken.jsonl"
    path.write_bytes(good + b"\n" + good + b"\n" + good[:-1] + b"\n")
    with pytest.raises(DataError, match=r"broken.jsonl, line 3: not valid JSON"):
        make_module(path)
    path = write_jsonl(tmp_path / "surrogate.jsonl", [GOOD, {**GOOD, "chosen": "1 \ud800"}])
    with pytest.raises(DataError, match=r"surrogate.jsonl, line 2: a string holds an unpaired"):
        make_module(path)


def test_missing_file_and_empty_dataset(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        make_module(tmp_path / "nope" / "d.jsonl")
    with pytest.raises(DataError, match="file or directory 'missing.jsonl' does not exist"):
        make_module("missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "empty.json").write_text("[]")
    empty = datasets.Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    empty.to_parquet(str(tmp_path / "empty.parquet"))
    for name in ("empty.jsonl", "empty.json", "empty.parquet"):
        with pytest.raises(DataError, match=rf"split 'train': .*{name}: the file holds no rows"):
            make_module(tmp_path / name)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: empty)
    for fmt in ("auto", "paired"):  # an empty split that does load, as from the hub
        with pytest.raises(DataError, match=r"'org/x', split 'dev': the dataset is empty"):
            make_module("org/x", format=fmt, train_split="dev")


def test_unreachable_hub_name_offline(monkeypatch, tmp_path):
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
    # both libraries read the variables at import time
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        DataError, match=r"'someorg/prefs', split 'train': the Hugging Face hub cannot be reached"
    ):
        make_module("someorg/prefs", cache_dir=str(tmp_path / "cache"))


def _snapshot(folder):
    files = sorted(folder.iterdir())
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "dir" for p in files}


def test_loading_never_modifies_the_users_files(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    write_jsonl(user / "d.jsonl", [GOOD] * 4)
    datasets.Dataset.from_list([GOOD] * 4).to_parquet(str(user / "d.parquet"))
    datasets.Dataset.from_list([GOOD] * 4).save_to_disk(user / "saved")
    before = {"files": _snapshot(user), "saved": _snapshot(user / "saved")}
    cache = str(tmp_path / "cache")
    for source in ("d.jsonl", "d.parquet", "saved"):
        dm = make_module(user / source, cache_dir=cache, val_fraction=0.25)
        assert len(dm.train_data) == 3
        assert all(f["filename"].startswith(cache) for f in dm.train_data.cache_files)
    assert {"files": _snapshot(user), "saved": _snapshot(user / "saved")} == before
