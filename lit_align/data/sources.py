"""Where rows come from: hub datasets, local files and directories, ``save_to_disk`` folders.

Loading only reads: nothing is written next to the user's files (see
:mod:`lit_align.data.prepare` for where tokenised caches go). Every failure is a
:class:`~lit_align.data.formats.DataError` naming ``--data.dataset``, the split and, for a file
that cannot be parsed, the file and line.

JSON and JSON Lines files may be compressed (``.gz``, ``.bz2``, ``.xz``; ``.zst`` with the
``zstandard`` package), as HH-RLHF ships. A local file holds one split, the training split; a
directory holds one split too, unless its file names start with split names (``train*``,
``validation*``/``valid*``/``val*``/``dev*``, ``test*``), as hub datasets lay them out: then each
split reads its own files. Asking a local source for a split it does not have is an error, never
the training rows again. A split may be sliced as ``datasets`` slices hub splits, for every
kind of source: ``train[:500]``, ``train[500:]``, ``train[:50%]``, ``train[-10%:]``, parts
joined with ``+``; a local source picks its files by the bare name (``train``) and keeps the
rows the slice names (after malformed lines skipped with ``--data.on_bad_rows skip``).

Local JSON Lines files are checked line by line before ``datasets`` reads them (see
:mod:`lit_align.data.json_lines`): a malformed line is an error naming the file and line, or
with ``--data.on_bad_rows skip`` it is skipped and counted as a bad row.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable

import datasets
import numpy as np
import pyarrow.parquet as pq

from lit_align.data.formats import CANONICAL_FIELDS, DataError
from lit_align.data.json_lines import (
    COMPRESSED,
    SURROGATE,
    checked_file,
    encodes,
    is_json_lines,
    line_problem,
    open_file,
    utf8_problem,
)

ROW_COLUMN = "__row__"
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}
SPLIT_NAMES = {"train": "train", "validation": "validation|valid|val|dev", "test": "test"}


def load_split(
    source: str,
    split: str,
    subset: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    unsplit: bool = True,
    skip_bad_lines: bool = False,
) -> tuple[datasets.Dataset, list[str]]:
    """One split of a hub dataset, a local file or directory, or a ``save_to_disk`` directory.

    Returns the rows and the messages of the JSON Lines lines skipped
    (``"f.jsonl, line 3: not valid JSON (...)"``; none unless ``skip_bad_lines``).

    Args:
        source: hub name (``org/name``), a json/jsonl/parquet/arrow file, a directory of such
            files (all of one type), or a ``datasets.save_to_disk`` directory.
        split: the split to read, or a slice of splits (``train[:500]``, ``train[50%:]``); a
            single local file or directory is read as any split name.
        subset: hub configuration name.
        revision: hub revision (branch, tag or commit).
        cache_dir: where ``datasets`` keeps downloads and converted files (default: its own).
        unsplit: whether this split may read a local file or directory that holds a single
            split (True for the training split); False makes such a source an error.
        skip_bad_lines: skip malformed lines of local JSON Lines files (``--data.on_bad_rows
            skip``) instead of raising on the first.
    """
    path = os.path.expanduser(source)
    where = f"--data.dataset {source!r}, split {split!r}"
    names = split_names(split, f"--data.dataset {source!r}, split")
    try:
        if os.path.isdir(path) and _is_saved_dataset(path):
            saved = datasets.load_from_disk(path)
            return _sliced(split, {n: _pick_split(saved, n, source) for n in names}, where), []
        if os.path.isfile(path) or os.path.isdir(path):
            parts, skipped = {}, []
            for name in names:
                files = _split_files(path, name, source, unsplit)
                parts[name], lines = _load_files(files, where, name, cache_dir, skip_bad_lines)
                skipped += lines
            return _sliced(split, parts, where), skipped
        if _looks_local(source):
            raise DataError(f"--data.dataset: file or directory {source!r} does not exist")
        data = datasets.load_dataset(
            source, subset, split=split, revision=revision, cache_dir=cache_dir
        )
        return data, []
    except DataError:
        raise
    except ConnectionError as err:
        raise DataError(
            f"{where}: the Hugging Face hub cannot be reached (offline mode or no network: "
            f"{err}); download the dataset where there is network, or pass a local path"
        ) from err
    except Exception as err:  # the library's own error, with the source and split named
        raise DataError(f"{where}: cannot load ({type(err).__name__}: {err})") from err


def split_names(split: str, flag: str) -> list[str]:
    """The bare split names of ``split`` (``["train"]`` for ``train[:50%]``), checked.

    A name without ``[``, ``(`` or ``+`` is any split name; otherwise ``split`` must be a slice
    as ``datasets`` writes them (``train[:500]``, ``train[50%:]``, ``train[:10%]+test[:10%]``).

    Raises:
        DataError: On a malformed slice, naming ``flag`` (e.g. ``--data.train_split``).
    """
    if not any(c in split for c in "[(+"):
        return [split]
    try:
        datasets.ReadInstruction.from_spec(split)
    except (ValueError, AssertionError) as err:
        raise DataError(
            f"{flag} {split!r} is not a split slice; write NAME[START:END] with row numbers or "
            "percentages, e.g. 'train[:500]' or 'train[50%:]', or several joined with '+'"
        ) from err
    return list(dict.fromkeys(re.match(r"[^\[(]*", p).group().strip() for p in split.split("+")))


def _sliced(split: str, parts: dict[str, datasets.Dataset], where: str) -> datasets.Dataset:
    """The rows ``split`` names, taken from ``parts`` (bare split name -> its rows)."""
    if split in parts:
        return parts[split]
    try:
        lengths = {name: len(rows) for name, rows in parts.items()}
        ranges = datasets.ReadInstruction.from_spec(split).to_absolute(lengths)
    except (ValueError, AssertionError) as err:
        raise DataError(f"{where}: {err}") from err
    pieces = [parts[r.splitname].select(range(r.from_, r.to)) for r in ranges]
    return pieces[0] if len(pieces) == 1 else datasets.concatenate_datasets(pieces)


def check_columns(columns: dict[str, str] | None) -> dict[str, str]:
    """Validate ``--data.columns`` (canonical field -> dataset column) and return it."""
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(CANONICAL_FIELDS))
    if unknown:
        raise ValueError(
            f"--data.columns: unknown field(s) {unknown}; map any of {list(CANONICAL_FIELDS)} "
            "to your column names, e.g. '{prompt: question, chosen: good, rejected: bad}'"
        )
    return columns


def map_columns(data: datasets.Dataset, columns: dict[str, str], where: str) -> datasets.Dataset:
    """Rename dataset columns to the canonical field names given by ``--data.columns``.

    A column already named like a mapped field (and not itself mapped) is dropped, so the
    mapping decides which column feeds each field. Renaming is a schema change: no data copy.
    """
    for name, column in columns.items():
        if column not in data.column_names:
            raise DataError(
                f"{where}: --data.columns maps {name!r} to column {column!r}, which the dataset "
                f"does not have (columns: {data.column_names})"
            )
    shadowed = [n for n in columns if n in data.column_names and n not in columns.values()]
    data = data.remove_columns(shadowed) if shadowed else data
    renames = {column: name for name, column in columns.items() if column != name}
    return data.rename_columns(renames) if renames else data


def hold_out(
    data: datasets.Dataset, fraction: float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """``(train, validation)``: a seeded ``ceil(fraction * rows)`` rows held out for validation.

    Each part keeps the file order and a :data:`ROW_COLUMN` column with the rows' indices in
    ``data``, so error messages name the row of the file. Everything added stays in memory
    (``train_test_split`` would write index files next to a ``save_to_disk`` dataset).
    """
    n_val = math.ceil(fraction * len(data))
    if not 0 < n_val < len(data):
        raise DataError(
            f"--data.val_fraction {fraction} holds out {n_val} of {len(data)} rows; "
            "it must leave at least one row in each split"
        )
    order = np.random.default_rng(seed).permutation(len(data))
    data = data.add_column(ROW_COLUMN, np.arange(len(data)))
    return data.select(np.sort(order[n_val:])), data.select(np.sort(order[:n_val]))


def file_type(name: str) -> str | None:
    """The ``datasets`` builder of a data file (``json`` for ``x.jsonl.gz``), or None."""
    stem, ext = os.path.splitext(name)
    if ext in COMPRESSED:
        stem, ext = os.path.splitext(stem)
        return "json" if FILE_BUILDERS.get(ext) == "json" else None
    return FILE_BUILDERS.get(ext)


def _looks_local(source: str) -> bool:
    known = file_type(source) is not None or source.endswith((".zst", ".gz", ".bz2", ".xz"))
    return source.startswith(("/", ".", "~")) or known or source.count("/") > 1


def _split_files(path: str, split: str, source: str, unsplit: bool) -> list[str]:
    """The files of ``split`` in a local file or directory (see the module docstring)."""
    if os.path.isfile(path):
        files, named = [path], {}
    else:
        files = [os.path.join(path, f) for f in sorted(os.listdir(path)) if file_type(f)]
        named = {s: [f for f in files if _names_split(f, s)] for s in {*SPLIT_NAMES, split}}
        named = {s: f for s, f in sorted(named.items()) if f}
    if named and split in named:
        return named[split]
    if named or not unsplit:
        has = f"has splits {sorted(named)}" if named else "holds one split (the training split)"
        raise DataError(
            f"--data.dataset {source!r} {has}, no split {split!r}; name validation data with "
            "--data.val_dataset PATH, or hold training rows out with --data.val_fraction"
        )
    return files


def _names_split(file: str, split: str) -> bool:
    pattern = SPLIT_NAMES.get(split, re.escape(split.lower()))
    return re.match(rf"({pattern})([-_.]|\d|$)", os.path.basename(file).lower()) is not None


def _is_saved_dataset(path: str) -> bool:
    names = ("dataset_dict.json", "state.json")
    return any(os.path.isfile(os.path.join(path, n)) for n in names)


def _pick_split(data, split: str, source: str) -> datasets.Dataset:
    if isinstance(data, datasets.Dataset):
        return data
    if split not in data:
        raise DataError(f"--data.dataset {source!r}: no split {split!r} (has {sorted(data)})")
    return data[split]


def _load_files(
    files: list[str], where: str, split: str, cache_dir: str | None, skip_bad_lines: bool
) -> tuple[datasets.Dataset, list[str]]:
    """The rows of local ``files`` and the messages of the JSON Lines lines skipped."""
    types = f"{sorted(FILE_BUILDERS)} (json/jsonl also {'/'.join(sorted(COMPRESSED))})"
    if not files:
        raise DataError(f"{where}: no {types} files found")
    builders = {file_type(f) for f in files}
    if None in builders or len(builders) != 1:
        raise DataError(f"{where}: expected files of one type among {types}")
    builder = builders.pop()
    checked = [
        checked_file(f, where, skip_bad_lines, cache_dir) if is_json_lines(f) else (f, [])
        for f in files
    ]
    files, skipped = [f for f, _ in checked], [line for _, lines in checked for line in lines]
    try:
        data = datasets.load_dataset(
            builder, data_files={split: files}, split=split, cache_dir=cache_dir
        )
        data.data.table.validate(full=True)  # pyarrow's JSON reader lets invalid UTF-8 through
        return data, skipped
    except Exception as err:
        problem = next(filter(None, (diagnose(f, builder) for f in files)), None)
        if problem is None:
            raise
        raise DataError(f"{where}: {problem}") from err


def diagnose(file: str, builder: str) -> str | None:
    """The first problem found in a data file that ``datasets`` failed to load, or None."""
    if builder == "parquet" and pq.read_metadata(file).num_rows == 0:
        return f"{file}: the file holds no rows"
    return diagnose_json(file) if builder == "json" else None


def diagnose_json(file: str) -> str | None:
    """The first problem of a JSON / JSON Lines file (``"f.jsonl, line 3: ..."``), or None."""
    with open_file(file) as f:
        lines = f.read().split(b"\n")
    problem = _first_bad_line(file, lines, utf8_problem)
    try:
        docs = [json.loads(b"\n".join(lines))] if problem is None else []  # one JSON document
    except json.JSONDecodeError:  # JSON Lines
        problem = _first_bad_line(file, lines, line_problem)
        docs = [json.loads(raw) for raw in lines if raw.strip()] if problem is None else []
    if problem is not None:
        return problem
    if all(doc in ([], {}) for doc in docs):
        return f"{file}: the file holds no rows"
    return None if encodes(docs) else f"{file}: {SURROGATE}"


def _first_bad_line(
    file: str, lines: list[bytes], check: Callable[[bytes], str | None]
) -> str | None:
    """``"f.jsonl, line 3: <problem>"`` for the first of ``lines`` that ``check`` faults."""
    problems = ((number, check(raw)) for number, raw in enumerate(lines, start=1))
    return next((f"{file}, line {n}: {p}" for n, p in problems if p is not None), None)
