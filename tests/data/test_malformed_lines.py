"""Malformed lines of local JSON Lines files: one error line naming the file, the line and
``--data.on_bad_rows skip``; with that flag, skipped and counted as bad rows of the split."""

import bz2
import gzip
import json
import lzma

import pytest
from data_rows import GOOD, make_module, write_jsonl

from lit_align.data import json_lines
from lit_align.data.formats import DataError
from lit_align.failures import reported_errors

ROWS = [{**GOOD, "prompt": f"sort: {i} 1\n"} for i in range(4)]
PROBLEM = "not valid JSON (Expecting property name enclosed in double quotes at column 2)"
COMPRESS = {"": lambda b: b, ".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def _write(path, lines: list[bytes], ext: str = ""):
    """Write ``lines`` (one JSON Lines line each) to ``path + ext``, compressed by ``ext``."""
    path = path.with_name(path.name + ext)
    path.write_bytes(COMPRESS[ext](b"".join(line + b"\n" for line in lines)))
    return path


def _lines(rows, bad: dict[int, bytes]) -> list[bytes]:
    """``rows`` as JSON Lines, with ``bad[i]`` inserted before row ``i``."""
    lines = [json.dumps(row).encode() for row in rows]
    for index in sorted(bad, reverse=True):
        lines.insert(index, bad[index])
    return lines


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_malformed_line_is_one_error_line_naming_file_line_and_flag(tmp_path, capsys, ext):
    cut = b'{"prompt": "sort: 2 1\\n",'
    path = _write(tmp_path / "pairs.jsonl", _lines(ROWS[:3], {2: cut}), ext)
    with pytest.raises(SystemExit) as done, reported_errors():
        make_module(path)
    assert done.value.code == 1
    line, hint = capsys.readouterr().err.strip().splitlines()[-2:]
    assert line == (
        f"lit-align: error: --data.dataset '{path}', split 'train': {path}, line 3: not valid "
        "JSON (Expecting property name enclosed in double quotes at column 26); pass "
        "--data.on_bad_rows skip to skip (and count) bad rows"
    )
    assert hint == "(--debug or LIT_ALIGN_DEBUG=1 shows the traceback)"


@pytest.mark.parametrize("ext", ["", ".gz", ".bz2", ".xz"])
def test_skip_keeps_the_other_rows_and_counts_the_bad_line(tmp_path, ext):
    path = _write(tmp_path / "pairs.jsonl", _lines(ROWS, {2: b"{not json"}), ext)
    dm = make_module(path, on_bad_rows="skip")
    clean = make_module(write_jsonl(tmp_path / "clean.jsonl", ROWS))
    assert dm.train_data["prompt_ids"] == clean.train_data["prompt_ids"]  # the 4 rows, in order
    stats = dm.stats["train"]
    assert (stats.rows, stats.bad, stats.kept) == (5, 1, 4)
    summary = dm.summary()
    assert "train: 4 pairs kept of 5 rows (1 bad skipped, 0 truncated, 0 dropped)" in summary
    assert "bad: 0 identical pairs (chosen == rejected), 0 empty responses, 1 other" in summary
    assert f"    skipped {path}, line 3: {PROBLEM}" in summary.splitlines()


def test_every_kind_of_bad_line_is_skipped_and_blank_lines_are_not_rows(tmp_path):
    first, second = _lines(ROWS[:2], {})
    latin1 = '{"prompt": "caf\u00e9"}'.encode("latin-1")
    lines = [b"[1, 2]", first, b"", latin1, second, b'{"a": "\\ud800"}']
    dm = make_module(_write(tmp_path / "pairs.jsonl", lines), on_bad_rows="skip")
    path = tmp_path / "pairs.jsonl"
    assert dm.stats["train"].errors == [
        f"{path}, line 1: not a JSON object (got list)",
        f"{path}, line 4: not valid UTF-8 (byte 0xe9 at offset 15)",
        f"{path}, line 6: a string holds an unpaired surrogate escape (such as \\ud800), which "
        "is not valid UTF-8",
    ]
    assert (dm.stats["train"].rows, dm.stats["train"].kept) == (5, 2)


def test_a_file_of_bad_lines_only_is_an_error_even_when_skipping(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", [b"{", b"", b"nope"])
    with pytest.raises(DataError, match=rf"{path}: no line holds a row \(2 bad lines\)"):
        make_module(path, on_bad_rows="skip")


def test_scan_and_copy_are_cached_once_per_version_of_the_file(tmp_path, monkeypatch):
    user = tmp_path / "user"
    user.mkdir()
    path = _write(user / "pairs.jsonl", _lines(ROWS, {1: b"{"}))
    cache = tmp_path / "cache"
    assert make_module(path, on_bad_rows="skip", cache_dir=str(cache)).stats["train"].bad == 1
    names = sorted(p.suffixes[-2:] for p in (cache / "lit_align" / "json_lines").iterdir())
    assert names == [[".jsonl"], [".lines", ".json"]]
    assert [p.name for p in user.iterdir()] == ["pairs.jsonl"]  # nothing next to the user's file
    with monkeypatch.context() as m:  # the same file again: neither scanned nor copied
        m.setattr(json_lines, "open_file", None)
        again = make_module(path, on_bad_rows="skip", cache_dir=str(cache))
    assert again.stats["train"].errors == [f"{path}, line 2: {PROBLEM}"]
    assert len(again.train_data) == 4
    _write(user / "pairs.jsonl", _lines(ROWS, {1: b"{", 3: b"}"}))  # the file changes
    changed = make_module(path, on_bad_rows="skip", cache_dir=str(cache))
    assert changed.stats["train"].bad == 2 and len(changed.train_data) == 4


def test_bad_lines_of_validation_data_count_in_the_validation_split(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    held = _write(tmp_path / "held.jsonl", _lines(ROWS[:2], {0: b"{"}), ".gz")
    dm = make_module(train, on_bad_rows="skip", val_dataset=str(held))
    assert (dm.stats["train"].bad, dm.stats["validation"].bad) == (0, 1)
    assert dm.stats["validation"].errors == [f"{held}, line 1: {PROBLEM}"]
