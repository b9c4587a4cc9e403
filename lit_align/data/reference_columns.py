"""The data module's side of precomputed reference log-probs (see :mod:`lit_align.reference`).

:func:`lit_align.reference.precompute` reads the tokenised splits through this mixin, scores
them, and hands back one Arrow table of extra columns per split; the loaders then serve every
row with its columns, and the collator builds ``PreferenceBatch.reference_logps`` from them.
The columns are joined when rows are read, not when a loader is made: Lightning may build the
training loader before ``on_fit_start`` (``trainer.estimated_stepping_batches`` does). The
tokenised splits themselves are never modified, so their fingerprints (part of the cache key)
stay those of the tokenisation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import torch

from lit_align.data.collate import PreferenceCollator
from lit_align.data.packing import row_dicts


class ReferenceColumns:
    """Mixin of ``PreferenceDataModule`` implementing :class:`lit_align.reference.ReferenceData`.

    Uses the data module's ``train_data``, ``val_data``, ``tokenizer`` and ``hparams``
    (``batch_size``, ``eval_batch_size``, ``cache_dir``). Precomputed reference log-probs join
    the rows through it (``--model.reference precomputed``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._reference_columns: dict[str, pa.Table] = {}

    def scoring_splits(self) -> dict[str, datasets.Dataset]:
        """The tokenised splits (no reference columns): ``{"train": ..., "validation": ...}``."""
        splits = {"train": self.train_data, "validation": self.val_data}
        return {name: data for name, data in splits.items() if data is not None}

    def scoring_collator(self) -> PreferenceCollator:
        """Pads rows for scoring (never with KL rows: they cannot be precomputed)."""
        return PreferenceCollator(self.tokenizer.pad_token_id)

    def scoring_batch_size(self) -> int:
        """Rows per scoring batch: the validation batch size."""
        return self.hparams.eval_batch_size or self.hparams.batch_size

    def reference_cache_dir(self) -> Path:
        """``<--data.cache_dir or the datasets cache>/lit_align/reference``, beside the tokenised
        splits."""
        root = self.hparams.cache_dir or datasets.config.HF_DATASETS_CACHE
        return Path(root) / "lit_align" / "reference"

    def attach_reference_logps(self, split: str, columns: pa.Table) -> None:
        """Serve ``columns`` (one row per row of ``split``) with the rows of ``split`` from now on.

        Raises:
            ValueError: the row counts differ.
        """
        rows = len(self.scoring_splits()[split])
        if columns.num_rows != rows:
            raise ValueError(f"{split}: {columns.num_rows} reference rows for {rows} data rows")
        self._reference_columns[split] = columns

    def loader_rows(self, split: str) -> RowsWithReference:
        """The rows a loader of ``split`` serves, with its reference columns once attached."""
        return RowsWithReference(
            self.scoring_splits()[split], lambda: self._reference_columns.get(split)
        )


class RowsWithReference(torch.utils.data.Dataset):
    """Map-style rows of a tokenised split (dicts), joined with its reference columns if any.

    ``rows[i]`` is one row; ``rows[[i, j, ...]]`` (packed loaders) and ``__getitems__`` (batched
    fetching by ``DataLoader``) read several in one columnar access.

    Args:
        data: the tokenised split (available as ``.data``).
        columns: returns the split's reference columns, or None; called at every read.
    """

    def __init__(self, data: datasets.Dataset, columns: Callable[[], pa.Table | None]) -> None:
        self.data = data.with_format(None)
        self.columns = columns

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int | list[int]) -> dict[str, Any] | list[dict[str, Any]]:
        return self.__getitems__([index])[0] if isinstance(index, int) else self.__getitems__(index)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        rows = row_dicts(self.data, indices)
        table = self.columns()
        if table is not None:
            for row, extra in zip(rows, table.take(indices).to_pylist(), strict=True):
                row.update(extra)
        return rows
