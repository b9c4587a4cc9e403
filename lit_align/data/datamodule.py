"""PreferenceDataModule: load, validate, tokenise and batch preference data."""

from __future__ import annotations

import os
import random
from typing import Any, Literal

import datasets
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_align.data.collate import PreferenceCollator, Truncation, tokenize_row
from lit_align.data.formats import DataError, RowContext, detect_format, normalize_row

BUILTIN_TASK = "builtin:sort"
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".arrow": "arrow"}


class PreferenceDataModule(LightningDataModule):
    """Preference pairs from the hub, local files or the embedded task.

    Args:
        dataset: hub dataset name, a local json/jsonl/parquet/arrow file or directory, a
            ``datasets.save_to_disk`` directory, or ``builtin:sort`` (the embedded task).
        subset: hub dataset configuration name.
        revision: hub dataset revision.
        train_split: split to train on.
        val_split: split to validate on; None for none (or use ``val_fraction``).
        val_fraction: fraction of the training split held out for validation (fixed seed).
        format: row format, or ``auto`` to detect it from the first row.
        system_prompt: system message prepended to every prompt.
        tokenizer: tokenizer name or directory; None uses the model's tokenizer.
        max_length: most tokens of prompt + response.
        max_prompt_length: most prompt tokens (default: half of ``max_length``).
        batch_size: pairs per micro-batch per device.
        eval_batch_size: pairs per validation batch (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        num_proc: processes for tokenisation with ``datasets.map``.
        seed: seed of the shuffle and of the held-out split.
        builtin_rows: training pairs generated for ``builtin:sort`` (validation gets a tenth).
        label_noise: fraction of training pairs whose chosen and rejected responses (and
            scores) are swapped, chosen with ``seed``: noisy preference labels for robustness
            studies, or imperfect demonstrations for an SFT stage. Validation is never touched.
    """

    def __init__(
        self,
        dataset: str = BUILTIN_TASK,
        subset: str | None = None,
        revision: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.0,
        format: Literal["auto", "paired", "conversational"] = "auto",
        system_prompt: str | None = None,
        tokenizer: str | None = None,
        max_length: int = 1024,
        max_prompt_length: int | None = None,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        seed: int = 0,
        builtin_rows: int = 2000,
        label_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_noise <= 1.0:
            raise ValueError(f"--data.label_noise must be in [0, 1], got {label_noise}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"--data.val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"--data.batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.truncation = Truncation(max_length, max_prompt_length)
        self.tokenizer_name = tokenizer
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_data: datasets.Dataset | None = None
        self.val_data: datasets.Dataset | None = None

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        self.tokenizer = self._resolve_tokenizer()
        raw = self._load_raw()
        train = swap_labels(raw["train"], self.hparams.label_noise, self.hparams.seed)
        self.train_data = self._prepare(train, "train")
        self.val_data = (
            self._prepare(raw["validation"], "validation") if raw.get("validation") else None
        )
        rank_zero_info(self.summary())

    def _resolve_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is not None:
            return self.tokenizer
        if self.tokenizer_name is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if module is None or getattr(module, "tokenizer", None) is None:
                raise ValueError("--data.tokenizer is required when no model provides one")
            return module.tokenizer
        from lit_align.models import PolicyConfig, load_tokenizer

        return load_tokenizer(PolicyConfig(tokenizer=self.tokenizer_name))

    def _load_raw(self) -> dict[str, datasets.Dataset | None]:
        hp = self.hparams
        if hp.dataset == BUILTIN_TASK:
            from lit_align.data.synthetic import make_rows

            n_val = max(hp.builtin_rows // 10, 1)
            return {
                "train": datasets.Dataset.from_list(make_rows(hp.builtin_rows, hp.seed)),
                "validation": datasets.Dataset.from_list(
                    make_rows(n_val, hp.seed + 1, split="validation")
                ),
            }
        train = load_split(hp.dataset, hp.train_split, hp.subset, hp.revision)
        val = load_split(hp.dataset, hp.val_split, hp.subset, hp.revision) if hp.val_split else None
        if hp.val_fraction > 0:
            parts = train.train_test_split(test_size=hp.val_fraction, seed=hp.seed)
            train, val = parts["train"], parts["test"]
        return {"train": train, "validation": val}

    def _prepare(self, data: datasets.Dataset, split: str) -> datasets.Dataset:
        if len(data) == 0:
            raise DataError(f"{self.hparams.dataset!r}, split {split!r}: the dataset is empty")
        fmt = self.hparams.format
        fmt = detect_format(data[0]) if fmt == "auto" else fmt
        source, tok, trunc = self.hparams.dataset, self.tokenizer, self.truncation
        system = self.hparams.system_prompt

        def encode(row: dict[str, Any], index: int) -> dict[str, Any]:
            canonical = normalize_row(row, fmt, RowContext(source, split, index), tok, system)
            return tokenize_row(canonical, tok, trunc)

        encoded = data.map(
            encode,
            with_indices=True,
            remove_columns=data.column_names,
            num_proc=self.hparams.num_proc,
            desc=f"tokenizing {split}",
        )
        stats = {"rows": len(encoded), "truncated": sum(encoded["truncated"])}
        kept = encoded.filter(
            lambda r: not r["dropped"], desc=f"dropping {split} rows that cannot fit"
        )
        stats["dropped"] = stats["rows"] - len(kept)
        if len(kept) == 0:
            raise DataError(f"{source!r}, split {split!r}: every row was dropped by truncation")
        self._stats = {**getattr(self, "_stats", {}), split: stats}
        return kept

    def summary(self) -> str:
        """One line per split: rows, truncated, dropped — shown at start-up."""
        lines = [f"data: {self.hparams.dataset!r} (max_length={self.truncation.max_length})"]
        for split, s in getattr(self, "_stats", {}).items():
            lines.append(
                f"  {split}: {s['rows'] - s['dropped']} pairs kept of {s['rows']} "
                f"({s['truncated']} truncated, {s['dropped']} dropped)"
            )
        return "\n".join(lines)

    # ----------------------------------------------------------- dataloaders
    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return self._loader(self.train_data, self.hparams.batch_size, True, generator)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_data is None:
            return []
        size = self.hparams.eval_batch_size or self.hparams.batch_size
        return self._loader(self.val_data, size, False, None)

    def _loader(self, data, batch_size, shuffle, generator) -> DataLoader:
        return DataLoader(
            data.with_format(None),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=PreferenceCollator(self.tokenizer.pad_token_id),
            num_workers=self.hparams.num_workers,
        )


def swap_labels(data: datasets.Dataset, fraction: float, seed: int) -> datasets.Dataset:
    """Swap ``chosen``/``rejected`` (and their scores) in a seeded ``fraction`` of the rows."""
    if fraction == 0.0:
        return data
    count = round(fraction * len(data))
    flipped = set(random.Random(seed).sample(range(len(data)), count))
    pairs = [("chosen", "rejected"), ("score_chosen", "score_rejected")]
    present = [(a, b) for a, b in pairs if a in data.column_names and b in data.column_names]

    def swap(row: dict[str, Any], index: int) -> dict[str, Any]:
        if index not in flipped:
            return row
        return {**row, **{a: row[b] for a, b in present}, **{b: row[a] for a, b in present}}

    return data.map(swap, with_indices=True, desc="label noise")


def load_split(
    source: str, split: str, subset: str | None = None, revision: str | None = None
) -> datasets.Dataset:
    """One split of a hub dataset, a local file or directory, or a ``save_to_disk`` directory."""
    path = os.path.expanduser(source)
    try:
        if os.path.isdir(path) and _is_saved_dataset(path):
            return _pick_split(datasets.load_from_disk(path), split, source)
        if os.path.isfile(path) or os.path.isdir(path):
            return _load_files(path, split, source)
        if source.startswith(("/", ".", "~")) or source.count("/") > 1:
            raise DataError(f"--data.dataset: file or directory {source!r} does not exist")
        return datasets.load_dataset(source, subset, split=split, revision=revision)
    except DataError:
        raise
    except Exception as err:  # hub or file errors: say which source and split failed
        raise DataError(f"--data.dataset {source!r}, split {split!r}: cannot load ({err})") from err


def _is_saved_dataset(path: str) -> bool:
    names = ("dataset_dict.json", "state.json", "dataset_info.json")
    return any(os.path.isfile(os.path.join(path, n)) for n in names)


def _pick_split(data, split: str, source: str) -> datasets.Dataset:
    if isinstance(data, datasets.Dataset):
        return data
    if split not in data:
        raise DataError(f"--data.dataset {source!r}: no split {split!r} (has {sorted(data)})")
    return data[split]


def _load_files(path: str, split: str, source: str) -> datasets.Dataset:
    files = (
        [path]
        if os.path.isfile(path)
        else sorted(
            os.path.join(path, f)
            for f in os.listdir(path)
            if os.path.splitext(f)[1] in _FILE_BUILDERS
        )
    )
    if not files:
        raise DataError(f"--data.dataset {source!r}: no {sorted(_FILE_BUILDERS)} files found")
    builders = {_FILE_BUILDERS.get(os.path.splitext(f)[1]) for f in files}
    if None in builders or len(builders) != 1:
        raise DataError(
            f"--data.dataset {source!r}: expected files of one type among {sorted(_FILE_BUILDERS)}"
        )
    return datasets.load_dataset(builders.pop(), data_files={split: files}, split=split)
