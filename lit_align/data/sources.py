"""Where rows come from: hub datasets, local files and directories, ``save_to_disk`` folders.

Loading only reads: nothing is written next to the user's files (see
:mod:`lit_align.data.prepare` for where tokenised caches go). Every failure is a
:class:`~lit_align.data.formats.DataError` naming ``--data.dataset``, the split and, for a file
that cannot be parsed, the file and line.
"""

from __future__ import annotations

import json
import math
import os

import datasets
import numpy as np
import pyarrow.parquet as pq

from lit_align.data.formats import CANONICAL_FIELDS, DataError

ROW_COLUMN = "__row__"
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}


def load_split(
    source: str,
    split: str,
    subset: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> datasets.Dataset:
    """One split of a hub dataset, a local file or directory, or a ``save_to_disk`` directory.

    Args:
        source: hub name (``org/name``), a json/jsonl/parquet/arrow file, a directory of such
            files (all of one type), or a ``datasets.save_to_disk`` directory.
        split: the split to read; a single local file or directory is read as this split.
        subset: hub configuration name.
        revision: hub revision (branch, tag or commit).
        cache_dir: where ``datasets`` keeps downloads and converted files (default: its own).
    """
    path = os.path.expanduser(source)
    where = f"--data.dataset {source!r}, split {split!r}"
    try:
        if os.path.isdir(path) and _is_saved_dataset(path):
            return _pick_split(datasets.load_from_disk(path), split, source)
        if os.path.isfile(path) or os.path.isdir(path):
            return _load_files(path, split, source, cache_dir)
        if _looks_local(source):
            raise DataError(f"--data.dataset: file or directory {source!r} does not exist")
        return datasets.load_dataset(
            source, subset, split=split, revision=revision, cache_dir=cache_dir
        )
    except DataError:
        raise
    except ConnectionError as err:
        raise DataError(
            f"{where}: the Hugging Face hub cannot be reached (offline mode or no network: "
            f"{err}); download the dataset where there is network, or pass a local path"
        ) from err
    except Exception as err:  # the library's own error, with the source and split named
        raise DataError(f"{where}: cannot load ({type(err).__name__}: {err})") from err


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


def _looks_local(source: str) -> bool:
    ext = os.path.splitext(source)[1]
    return source.startswith(("/", ".", "~")) or ext in FILE_BUILDERS or source.count("/") > 1


def _is_saved_dataset(path: str) -> bool:
    names = ("dataset_dict.json", "state.json")
    return any(os.path.isfile(os.path.join(path, n)) for n in names)


def _pick_split(data, split: str, source: str) -> datasets.Dataset:
    if isinstance(data, datasets.Dataset):
        return data
    if split not in data:
        raise DataError(f"--data.dataset {source!r}: no split {split!r} (has {sorted(data)})")
    return data[split]


def _load_files(path: str, split: str, source: str, cache_dir: str | None) -> datasets.Dataset:
    if os.path.isfile(path):
        files = [path]
    else:
        names = sorted(os.listdir(path))
        files = [os.path.join(path, f) for f in names if os.path.splitext(f)[1] in FILE_BUILDERS]
    if not files:
        raise DataError(f"--data.dataset {source!r}: no {sorted(FILE_BUILDERS)} files found")
    builders = {FILE_BUILDERS.get(os.path.splitext(f)[1]) for f in files}
    if None in builders or len(builders) != 1:
        raise DataError(
            f"--data.dataset {source!r}: expected files of one type among {sorted(FILE_BUILDERS)}"
        )
    builder = builders.pop()
    try:
        data = datasets.load_dataset(
            builder, data_files={split: files}, split=split, cache_dir=cache_dir
        )
        data.data.table.validate(full=True)  # pyarrow's JSON reader lets invalid UTF-8 through
        return data
    except Exception as err:
        problem = next(filter(None, (diagnose(f, builder) for f in files)), None)
        if problem is None:
            raise
        raise DataError(f"--data.dataset {source!r}, split {split!r}: {problem}") from err


def diagnose(file: str, builder: str) -> str | None:
    """The first problem found in a data file that ``datasets`` failed to load, or None."""
    if builder == "parquet" and pq.read_metadata(file).num_rows == 0:
        return f"{file}: the file holds no rows"
    return diagnose_json(file) if builder == "json" else None


def diagnose_json(file: str) -> str | None:
    """The first problem of a JSON / JSON Lines file (``"f.jsonl, line 3: ..."``), or None."""
    with open(file, "rb") as f:
        lines = f.read().split(b"\n")
    for number, raw in enumerate(lines, start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            bad = f"byte 0x{raw[err.start]:02x} at offset {err.start}"
            return f"{file}, line {number}: not valid UTF-8 ({bad})"
    try:
        docs = [("", json.loads(b"\n".join(lines)))]  # one JSON document
    except json.JSONDecodeError:
        docs = []
        for number, raw in enumerate(lines, start=1):  # JSON Lines
            try:
                docs += [(f", line {number}", json.loads(raw))] if raw.strip() else []
            except json.JSONDecodeError as err:
                return f"{file}, line {number}: not valid JSON ({err.msg} at column {err.colno})"
    if all(doc in ([], {}) for _, doc in docs):
        return f"{file}: the file holds no rows"
    for where, doc in docs:
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return (
                f"{file}{where}: a string holds an unpaired surrogate escape (such as \\ud800), "
                "which is not valid UTF-8"
            )
    return None
