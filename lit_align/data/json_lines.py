"""Local JSON Lines files checked line by line: a malformed line is an error, or skipped.

``datasets``' JSON reader stops at the first malformed line of a file. So each local JSON Lines
file (``*.jsonl``, possibly compressed) is read first, one line at a time, whatever its size:
every line must be UTF-8 holding one JSON object. A file without bad lines goes to ``datasets``
as it is. A bad line is an error naming the file, the line and ``--data.on_bad_rows skip``; with
that flag the file's good lines are copied once, verbatim, under the cache and the copy is read
instead, while the skipped lines are counted as bad rows of the split. The scan's result and the
copy are kept under the cache (never next to the user's file), keyed by the file's path, size
and modification time, so a later run with the same file neither scans nor copies it again.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import lzma
import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import IO

import datasets
from datasets.fingerprint import Hasher

from lit_align.data.formats import SKIP_HINT, DataError

COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}  # JSON / JSON Lines only
if importlib.util.find_spec("zstandard") is not None:
    import zstandard

    COMPRESSED[".zst"] = zstandard.open
SURROGATE = (
    "a string holds an unpaired surrogate escape (such as \\ud800), which is not valid UTF-8"
)


def open_file(file: str) -> IO[bytes]:
    """``file`` opened for reading bytes, decompressed by its extension (``.gz``, ...)."""
    return COMPRESSED.get(os.path.splitext(file)[1], open)(file, "rb")


def is_json_lines(file: str) -> bool:
    """Whether ``file`` is named as JSON Lines: ``x.jsonl`` or ``x.jsonl.gz`` (any compression)."""
    stem, ext = os.path.splitext(file)
    return (stem if ext in COMPRESSED else file).endswith(".jsonl")


def utf8_problem(raw: bytes) -> str | None:
    """Why ``raw`` is not valid UTF-8 (``"not valid UTF-8 (byte 0xe9 at offset 4)"``), or None."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})"
    return None


def line_problem(raw: bytes) -> str | None:
    """What is wrong with one line of a JSON Lines file, or None (a blank line is fine)."""
    problem = utf8_problem(raw)
    if problem is not None:
        return problem
    text = raw.decode("utf-8").rstrip("\r\n")  # columns counted on the line itself
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg} at column {err.colno})"
    if not isinstance(row, dict):
        return f"not a JSON object (got {type(row).__name__})"
    if "\\ud" in text.lower() and not encodes(row):  # a lone \ud800-\udfff escape
        return SURROGATE
    return None


def checked_file(file: str, where: str, skip: bool, cache_dir: str | None) -> tuple[str, list[str]]:
    """The file to read in place of JSON Lines ``file``, and the messages of its skipped lines.

    Args:
        file: a local JSON Lines file.
        where: the source and split, for error messages (``--data.dataset 'x', split 'train'``).
        skip: skip bad lines (``--data.on_bad_rows skip``); otherwise the first is an error.
        cache_dir: root of the scan records and copies (default: the ``datasets`` cache).
    """
    stat = os.stat(file)
    key = Hasher.hash([os.path.abspath(file), stat.st_size, stat.st_mtime_ns])
    root = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "lit_align" / "json_lines"
    stem = root / f"{Path(file).name.split('.')[0]}-{key}"
    rows, bad = _scan(file, stem.with_suffix(".lines.json"), first_only=not skip)
    messages = [f"{file}, line {number}: {problem}" for number, problem in bad]
    if messages and not skip:
        raise DataError(f"{where}: {messages[0]}; {SKIP_HINT}")
    if not bad:
        return file, []
    if not rows:
        raise DataError(f"{where}: {file}: no line holds a row ({len(bad)} bad lines)")
    return _good_lines(file, {number for number, _ in bad}, stem.with_suffix(".jsonl")), messages


def _scan(file: str, record: Path, first_only: bool) -> tuple[int, list[tuple[int, str]]]:
    """``(rows, [(line number, problem), ...])`` of ``file``, one line at a time.

    A whole scan is kept in ``record``, which the next run with the same file reads instead;
    ``first_only`` stops at the first bad line (and keeps no record).
    """
    if record.exists():
        rows, bad = json.loads(record.read_bytes())
        return rows, [(number, problem) for number, problem in bad]
    rows, bad = 0, []
    with open_file(file) as lines:
        for number, raw in enumerate(lines, start=1):
            problem = line_problem(raw)
            if problem is None:
                rows += bool(raw.strip())
                continue
            bad.append((number, problem))
            if first_only:
                return rows, bad
    _write_once(record, [json.dumps([rows, bad]).encode()])
    return rows, bad


def _good_lines(file: str, bad: Collection[int], copy: Path) -> str:
    """``copy``: ``file`` without lines ``bad``, written unless a previous run wrote it."""
    if not copy.exists():
        with open_file(file) as src:
            _write_once(copy, (raw for number, raw in enumerate(src, start=1) if number not in bad))
    return str(copy)


def _write_once(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` through a private partial file (ranks may write at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as out:
        out.writelines(chunks)
    os.replace(partial, path)


def encodes(value: object) -> bool:
    """Whether parsed JSON ``value`` is valid UTF-8 (no string holds a lone surrogate)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
