"""PreferenceDataModule: load, validate, tokenise and batch preference data."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import datasets
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lit_align.data.collate import PreferenceCollator, Truncation
from lit_align.data.formats import SKIP_HINT, DataError, detect_format
from lit_align.data.packing import packed_loader
from lit_align.data.prepare import Encoding, SplitStats, prepare_split
from lit_align.data.reference_columns import ReferenceColumns
from lit_align.data.sampler import LoaderPosition, ResumableLoader, ResumableSampler
from lit_align.data.sources import check_columns, hold_out, load_split, map_columns, split_names
from lit_align.losses.base import PreferenceLoss

BUILTIN_TASK = "builtin:sort"
Format = Literal["auto", "paired", "conversational", "implicit_prompt", "unpaired"]


class PreferenceDataModule(ReferenceColumns, LightningDataModule):
    """Preference data from the hub, local files or the embedded task.

    Rows of every supported format (see :mod:`lit_align.data.formats`) become canonical paired
    or unpaired rows, are tokenised once with ``datasets.map`` (cached by fingerprint, see
    :mod:`lit_align.data.prepare`) and batched into :class:`~lit_align.types.PreferenceBatch`.
    A summary of each split (rows kept, bad, truncated, dropped) is printed at start-up and the
    counts are logged to the trainer's logger as ``data/<split>_<count>``.

    Training order is a function of ``seed`` and the epoch, sharded by rank when
    ``torch.distributed`` is initialised, and resumable mid-epoch from a checkpoint without
    repeating or skipping a batch (see :mod:`lit_align.data.sampler`; keep Lightning's default
    ``trainer.use_distributed_sampler``). Validation runs every ``trainer.val_check_interval``
    (a fraction of an epoch or a number of training batches) on the validation split.

    What it needs from the model (its tokenizer, the loss's capabilities) is pushed in once with
    :meth:`connect` (``lit-align`` does it after building both); it never reads the module.

    Args:
        dataset: hub dataset name, a local json/jsonl/parquet/arrow file or directory, a
            ``datasets.save_to_disk`` directory, or ``builtin:sort`` (the embedded task).
        subset: hub dataset configuration name.
        revision: hub dataset revision.
        train_split: split to train on.
        val_split: split to validate on; None for none (or use ``val_fraction``). A local
            directory has it only when its file names say so (``validation.jsonl``, ...); a
            single local file has none (see :mod:`lit_align.data.sources`).
        val_dataset: separate validation data (same kinds as ``dataset``), read as its
            ``val_split`` (default: ``train_split``); None validates on ``dataset``.
        val_fraction: fraction of the training split held out for validation (fixed seed).
        format: row format, or ``auto`` to detect it from the columns and first row.
        columns: dataset column of each canonical field, e.g.
            ``{prompt: question, chosen: good, rejected: bad}``.
        unpair: turn each pair into a desirable (chosen) and an undesirable (rejected) row, for
            losses on unpaired data (KTO, BCO, BNF).
        kl_rows: append to unpaired batches the mismatched rows of KTO's KL estimate
            (completion ``i`` under prompt ``i + 1 mod N``); None follows the loss's
            ``needs_kl_rows`` capability.
        system_prompt: system message prepended to every prompt.
        tokenizer: tokenizer name or directory; None uses the model's tokenizer.
        max_length: most tokens of prompt + response (eos included).
        max_prompt_length: most prompt tokens; also how far a too-long row's prompt may be cut
            (default: half of ``max_length``).
        prompt_truncation: which end of a cut prompt is kept: ``keep_end`` or ``keep_start``.
        truncation: ``truncate`` rows that do not fit, or ``drop`` them; counted either way.
        on_bad_rows: ``error`` stops at the first malformed row, naming source, split, row and
            field (for a malformed line of a ``.jsonl`` file: the file and line); ``skip``
            drops malformed rows and lines and counts them in the start-up summary.
        batch_size: pairs (or unpaired rows) per micro-batch per device.
        eval_batch_size: pairs per validation batch (default: ``batch_size``).
        group_by_length: batch training rows of similar length together (less padding).
        num_workers: DataLoader worker processes.
        num_proc: processes for tokenisation with ``datasets.map``.
        cache_dir: cache of downloads and tokenised splits (default: the ``datasets`` cache).
        seed: seed of the shuffle, of the held-out split and of ``label_noise``.
        builtin_rows: training pairs generated for ``builtin:sort`` (validation gets a tenth).
        label_noise: fraction of training rows whose preference is inverted (chosen and
            rejected swapped with their scores, or an unpaired label negated), chosen with
            ``seed``: noisy labels for robustness studies, or imperfect demonstrations for an
            SFT stage. Validation is never touched.
        packing: pack each batch's sequences in one row without padding, batched to
            ``max_tokens_per_batch`` instead of ``batch_size`` (:mod:`lit_align.data.packing`).
        max_tokens_per_batch: token budget of a packed batch (a pair counts its prompt twice).
    """

    def __init__(
        self,
        dataset: str = BUILTIN_TASK,
        subset: str | None = None,
        revision: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        val_dataset: str | None = None,
        val_fraction: float = 0.0,
        format: Format = "auto",
        columns: dict[str, str] | None = None,
        unpair: bool = False,
        kl_rows: bool | None = None,
        system_prompt: str | None = None,
        tokenizer: str | None = None,
        max_length: int = 1024,
        max_prompt_length: int | None = None,
        prompt_truncation: Literal["keep_end", "keep_start"] = "keep_end",
        truncation: Literal["truncate", "drop"] = "truncate",
        on_bad_rows: Literal["error", "skip"] = "error",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        group_by_length: bool = False,
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        builtin_rows: int = 2000,
        label_noise: float = 0.0,
        packing: bool = False,
        max_tokens_per_batch: int | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_noise <= 1.0:
            raise ValueError(f"--data.label_noise must be in [0, 1], got {label_noise}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"--data.val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"--data.batch_size must be >= 1, got {batch_size}")
        if on_bad_rows not in ("error", "skip"):
            raise ValueError(f"--data.on_bad_rows must be error or skip, got {on_bad_rows!r}")
        if val_dataset is not None and val_fraction > 0:
            raise ValueError("--data.val_dataset and --data.val_fraction exclude each other")
        if packing and (max_tokens_per_batch or 0) < 1:
            got = max_tokens_per_batch
            raise ValueError(f"--data.packing needs --data.max_tokens_per_batch >= 1, got {got}")
        split_names(train_split, "--data.train_split")
        if val_split is not None:
            split_names(val_split, "--data.val_split")
        self.save_hyperparameters()
        self.columns = check_columns(columns)
        self.truncation = Truncation(max_length, max_prompt_length, prompt_truncation, truncation)
        self.tokenizer_name = tokenizer
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_data: datasets.Dataset | None = None
        self.val_data: datasets.Dataset | None = None
        self.stats: dict[str, SplitStats] = {}
        self.format: str | None = None
        self.kl_rows = False
        self._position = LoaderPosition()
        self._loss: PreferenceLoss | None = None
        self._model_tokenizer: Callable[[], PreTrainedTokenizerBase] | None = None

    def connect(
        self,
        loss: PreferenceLoss | None = None,
        tokenizer: Callable[[], PreTrainedTokenizerBase] | None = None,
    ) -> None:
        """What the data needs from the model, pushed in before ``setup``.

        Args:
            loss: the loss to train; the data layout is checked against its
                :meth:`~lit_align.losses.PreferenceLoss.capabilities` and ``needs_kl_rows``
                decides ``kl_rows`` (unless ``--data.kl_rows`` is set).
            tokenizer: returns the model's tokenizer (called in ``setup``, only when
                ``--data.tokenizer`` is unset, so connecting loads nothing).
        """
        self._loss, self._model_tokenizer = loss, tokenizer

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        self.tokenizer = self._resolve_tokenizer()
        raw = self._load_raw()
        self.format = self._resolve_format(raw["train"][0])
        enc = Encoding(
            source=self.hparams.dataset,
            format=self.format,
            truncation=self.truncation,
            system_prompt=self.hparams.system_prompt,
            unpair=self.hparams.unpair,
            skip_bad_rows=self.hparams.on_bad_rows == "skip",
            seed=self.hparams.seed,
        )
        self.kl_rows = self._check_loss(enc.unpaired)
        noisy = dataclasses.replace(enc, label_noise=self.hparams.label_noise)
        self.train_data = self._prepare(*raw["train"], "train", noisy)
        if "validation" in raw:
            self.val_data = self._prepare(*raw["validation"], "validation", enc)
        rank_zero_info(self.summary())
        self._log_stats()

    def _resolve_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is not None:
            return self.tokenizer
        if self.tokenizer_name is None:
            tokenizer = self._model_tokenizer() if self._model_tokenizer is not None else None
            if tokenizer is None:
                raise ValueError("--data.tokenizer is required when no model provides one")
            return tokenizer
        from lit_align.models import PolicyConfig, load_tokenizer

        return load_tokenizer(PolicyConfig(tokenizer=self.tokenizer_name))

    def _load_raw(self) -> dict[str, tuple[datasets.Dataset, str, list[str]]]:
        """``{"train": (rows, source split, skipped lines), ...}`` (see :meth:`_load`)."""
        hp = self.hparams
        if hp.dataset == BUILTIN_TASK:
            from lit_align.data.synthetic import make_rows

            n_val = max(hp.builtin_rows // 10, 1)
            rows = {
                "train": make_rows(hp.builtin_rows, hp.seed),
                "validation": make_rows(n_val, hp.seed + 1, split="validation"),
            }
            return {name: (datasets.Dataset.from_list(r), name, []) for name, r in rows.items()}
        raw = {"train": self._load(hp.train_split)}
        if hp.val_fraction > 0:
            data, split, skipped = raw["train"]
            train, val = hold_out(data, hp.val_fraction, hp.seed)
            return {"train": (train, split, skipped), "validation": (val, split, [])}
        if hp.val_dataset:
            raw["validation"] = self._load(hp.val_split or hp.train_split, hp.val_dataset)
        elif hp.val_split:
            raw["validation"] = self._load(hp.val_split, unsplit=False)
        return raw

    def _load(
        self, split: str, source: str | None = None, unsplit: bool = True
    ) -> tuple[datasets.Dataset, str, list[str]]:
        """``(rows, split, skipped lines)`` of ``source`` (default ``--data.dataset``).

        ``--data.columns`` is applied to the rows; the skipped lines are the messages of the
        malformed JSON Lines lines skipped with ``--data.on_bad_rows skip``.
        """
        hp, source = self.hparams, source or self.hparams.dataset
        subset, revision = (hp.subset, hp.revision) if source == hp.dataset else (None, None)
        skip = hp.on_bad_rows == "skip"
        data, skipped = load_split(source, split, subset, revision, hp.cache_dir, unsplit, skip)
        where = f"--data.dataset {source!r}, split {split!r}"
        return (map_columns(data, self.columns, where) if self.columns else data), split, skipped

    def _resolve_format(self, train: datasets.Dataset) -> str:
        if self.hparams.format != "auto":
            return self.hparams.format
        if len(train) == 0:
            split = self.hparams.train_split
            raise DataError(f"{self.hparams.dataset!r}, split {split!r}: the dataset is empty")
        where = f"--data.dataset {self.hparams.dataset!r}"
        return detect_format(train.column_names, train[0], where)

    def _check_loss(self, unpaired: bool) -> bool:
        """Check the data layout against the loss's capabilities; return whether to add KL rows."""
        if self._loss is None:  # not connected to a loss: any layout, KL rows only when asked
            return self._check_kl_rows(bool(self.hparams.kl_rows), unpaired)
        caps, name = self._loss.capabilities(), type(self._loss).__name__
        if unpaired and not caps["supports_unpaired"]:
            raise DataError(
                f"--model.loss {name} needs paired data, but the data is unpaired "
                f"(format {self.format!r}, --data.unpair {self.hparams.unpair}); use paired "
                "data or a loss for unpaired data (KTO, BCO, BNF)"
            )
        if not unpaired and not caps["supports_paired"]:
            raise DataError(
                f"--model.loss {name} needs unpaired data, but the data is paired "
                f"(format {self.format!r}); set --data.unpair true to make each pair a "
                "desirable and an undesirable row"
            )
        kl_rows = self.hparams.kl_rows
        return self._check_kl_rows(caps["needs_kl_rows"] if kl_rows is None else kl_rows, unpaired)

    def _check_kl_rows(self, kl_rows: bool, unpaired: bool) -> bool:
        if kl_rows and not unpaired:
            raise ValueError("--data.kl_rows applies to unpaired data only (or --data.unpair)")
        if kl_rows and self.hparams.batch_size < 2:
            raise ValueError(
                "--data.batch_size must be >= 2 with KL rows (completion i is paired with the "
                f"prompt of row i + 1 of the same batch), got {self.hparams.batch_size}"
            )
        return kl_rows

    def _prepare(
        self, data, source_split: str, skipped: list[str], split: str, enc: Encoding
    ) -> datasets.Dataset:
        hp = self.hparams
        try:
            prepared, self.stats[split] = prepare_split(
                data, split, enc, self.tokenizer, hp.num_proc, hp.cache_dir, source_split, skipped
            )
        except DataError as err:
            if not err.detail or hp.on_bad_rows == "skip":
                raise
            hint = DataError(f"{err}; {SKIP_HINT}")
            hint.detail = err.detail
            raise hint from err
        return prepared

    def summary(self) -> str:
        """The start-up summary: settings, then one line per split (kept, bad, truncated, ...)."""
        hp, t = self.hparams, self.truncation
        layout = "unpaired" if self.stats and self.stats["train"].unpaired else "paired"
        how = "auto-detected" if hp.format == "auto" else "--data.format"
        kl = ", with KL rows" if self.kl_rows else ""
        if t.max_prompt_length:
            prompts = f"prompts cut to max_prompt_length={t.max_prompt_length}"
        else:  # prompt_limit is then a floor, not a cap: long prompts of short rows stay whole
            prompts = (
                f"a prompt is cut only when its row exceeds max_length, never below "
                f"{t.prompt_limit} tokens (max_length // 2)"
            )
        lines = [
            f"data: {hp.dataset!r} format={self.format} ({how}), {layout}{kl}; "
            f"max_length={t.max_length}; {prompts}, keeping its {t.prompt_side[5:]}; "
            f"truncation={t.policy}, on_bad_rows={hp.on_bad_rows}"
        ]
        for split, stats in self.stats.items():
            lines += stats.describe(split)
        return "\n".join(lines)

    def _log_stats(self) -> None:
        logger = self.trainer.logger if self.trainer is not None else None
        if logger is None:
            return
        counts = ("kept", "bad", "truncated", "dropped")
        logger.log_metrics(
            {f"data/{s}_{c}": getattr(st, c) for s, st in self.stats.items() for c in counts},
            step=0,
        )

    # ----------------------------------------------------------- dataloaders
    def train_dataloader(self) -> ResumableLoader:
        hp, data = self.hparams, self.loader_rows("train")
        if hp.packing:
            return self._position.track(packed_loader(data, self._collator(), hp, shuffle=True))
        lengths = list(self.train_data["length"]) if hp.group_by_length else None
        sampler = ResumableSampler(len(data), hp.batch_size, lengths, shuffle=True, seed=hp.seed)
        loader = ResumableLoader(
            data, batch_size=hp.batch_size, sampler=sampler, collate_fn=self._collator(),
            num_workers=hp.num_workers,
        )
        return self._position.track(loader)

    def state_dict(self) -> dict:
        """The training loader's position (see :class:`~lit_align.data.sampler.LoaderPosition`)."""
        return self._position.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._position.load_state_dict(state_dict)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_data is None:
            return []
        hp, data = self.hparams, self.loader_rows("validation")
        if hp.packing:
            return packed_loader(data, self._collator(), hp, shuffle=False)
        return DataLoader(
            data,
            batch_size=self.hparams.eval_batch_size or self.hparams.batch_size,
            shuffle=False,
            collate_fn=self._collator(),
            num_workers=self.hparams.num_workers,
        )

    def _collator(self) -> PreferenceCollator:
        max_length = self.truncation.max_length
        return PreferenceCollator(self.tokenizer.pad_token_id, self.kl_rows, max_length)
