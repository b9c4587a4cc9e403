"""``lit-align score``: score a preference dataset with a reward model, into a new file.

::

    lit-align score --model runs/reward/sort/export --dataset pairs.jsonl --output scored.jsonl

Every row of the input comes out in the same order with its columns, plus ``score_chosen`` and
``score_rejected``: the reward model's scores of prompt+chosen and prompt+rejected (replacing
columns of those names). Rows are read, validated, rendered and tokenised exactly as
``PreferenceDataModule`` does for training (same formats, ``--data``-like options; run it with
the settings you will train with); a malformed row gets null scores and is listed in the
summary. The input is never modified: the output must be a new path (``--overwrite true``
replaces an earlier output, never the input itself). ``.jsonl``/``.json`` (JSON Lines),
``.parquet`` or, without an extension, a ``save_to_disk`` directory; any of them is a valid
``--data.dataset`` (e.g. for SPO with ``--model.loss.use_scores true``).

Scores run batched, longest rows first, on the GPU when there is one. Launched with several
processes (``torchrun --nproc_per_node 8 -m lit_align.cli score ...``) each rank scores its
share of the rows and rank 0 writes the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import datasets
import torch
import torch.distributed as dist
from transformers import PreTrainedTokenizerBase

from lit_align.data.collate import PreferenceCollator, Truncation
from lit_align.data.formats import SCORE_FIELDS, DataError, detect_format, is_unpaired
from lit_align.data.prepare import PAIRED_FEATURES, Encoder, Encoding
from lit_align.data.sources import check_columns, load_split, map_columns, split_names
from lit_align.reward.model import RewardScorer, load_reward_model

OUTPUT_TYPES = (".jsonl", ".json", ".parquet", "")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ScoreSettings:
    """What to score with which reward model, and where to write it.

    Attributes:
        model: reward model directory (a ``lit-align`` export, or any
            ``AutoModelForSequenceClassification`` with one output) with its tokenizer.
        dataset: hub dataset, json/jsonl/parquet/arrow file or directory, or ``save_to_disk``
            directory, as ``--data.dataset``.
        output: the new file (``.jsonl``, ``.json``, ``.parquet``) or directory (no extension).
        overwrite: replace an existing ``output`` (never the input).
        split: the split to score.
        subset: hub dataset configuration name.
        revision: hub dataset revision.
        format: row format (``auto`` detects it), as ``--data.format``; paired formats only.
        columns: dataset column of each canonical field, as ``--data.columns``.
        system_prompt: system message prepended to every prompt, as ``--data.system_prompt``.
        max_length: most tokens of prompt + response, as ``--data.max_length``.
        max_prompt_length: most prompt tokens, as ``--data.max_prompt_length``.
        batch_size: pairs per forward pass.
        dtype: model dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:1``…; None: this rank's GPU when there is one, else CPU.
    """

    model: str
    dataset: str
    output: str
    overwrite: bool = False
    split: str = "train"
    subset: str | None = None
    revision: str | None = None
    format: str = "auto"
    columns: dict[str, str] | None = None
    system_prompt: str | None = None
    max_length: int = 1024
    max_prompt_length: int | None = None
    batch_size: int = 16
    dtype: str = "float32"
    device: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {DTYPES}, got {self.dtype!r}")
        if os.path.splitext(self.output)[1] not in OUTPUT_TYPES:
            raise ValueError(
                f"--output {self.output!r}: write .jsonl, .json, .parquet, or a directory "
                "(no extension)"
            )
        split_names(self.split, "--split")  # a malformed slice fails here, naming the flag


@dataclass(frozen=True)
class ScoreSummary:
    """What :func:`score_dataset` did.

    Attributes:
        output: the file or directory written.
        rows: rows of the input.
        scored: rows that got scores (the others are malformed and hold nulls).
        accuracy: fraction of scored rows with ``score_chosen > score_rejected``.
        mean_gap: mean ``score_chosen − score_rejected`` over the scored rows.
        errors: the malformed rows' problems (row, field, what).
    """

    output: str
    rows: int
    scored: int
    accuracy: float
    mean_gap: float
    errors: tuple[str, ...]

    def describe(self) -> str:
        lines = [
            f"scored {self.scored} of {self.rows} pairs; score_chosen > score_rejected on "
            f"{self.accuracy:.3f}, mean gap {self.mean_gap:.4f}; wrote {self.output}"
        ]
        lines += [f"  null scores: {error}" for error in self.errors[:3]]
        if len(self.errors) > 3:
            lines.append(f"  ... and {len(self.errors) - 3} more malformed rows")
        return "\n".join(lines)


def check_output(settings: ScoreSettings) -> None:
    """Refuse to write over the input, or over an existing output without ``--overwrite``."""
    output = os.path.realpath(os.path.expanduser(settings.output))
    source = os.path.realpath(os.path.expanduser(settings.dataset))
    if output == source or output.startswith(source + os.sep):
        raise ValueError(f"--output {settings.output!r} is the input dataset; choose a new path")
    if os.path.exists(output) and not settings.overwrite:
        raise FileExistsError(
            f"--output {settings.output!r} exists; choose a new path or pass --overwrite true"
        )


def score_dataset(settings: ScoreSettings) -> ScoreSummary:
    """Score ``settings.dataset`` with ``settings.model`` and write ``settings.output``.

    Under ``torch.distributed`` (initialised here when launched with ``WORLD_SIZE > 1``) every
    rank must call it; each scores every ``world_size``-th row and rank 0 writes the output.
    """
    check_output(settings)
    rank, world = _join_ranks()
    scorer, tokenizer = load_reward_model(settings.model, settings.dtype, _device(settings))
    raw, _ = load_split(settings.dataset, settings.split, settings.subset, settings.revision)
    encoded = _encode(raw, settings, tokenizer)
    errors, lengths = list(encoded["error"]), list(encoded["length"])
    good = [i for i, error in enumerate(errors) if error is None]
    mine = sorted(good, key=lambda i: -lengths[i])[rank::world]
    collator = PreferenceCollator(tokenizer.pad_token_id)
    scores = _gather(score_rows(scorer, encoded, mine, collator, settings.batch_size))
    summary = _summary(settings.output, errors, scores)
    if rank == 0:
        _write(_with_scores(raw, scores), settings.output)
    if world > 1:
        dist.barrier()
    return summary


def score_rows(
    scorer: RewardScorer,
    encoded: datasets.Dataset,
    indices: list[int],
    collator: PreferenceCollator,
    batch_size: int,
) -> dict[int, tuple[float, float]]:
    """``{row: (score_chosen, score_rejected)}`` of the tokenised paired rows ``indices``."""
    device = next(scorer.parameters()).device
    scores = {}
    for start in range(0, len(indices), batch_size):
        rows = indices[start : start + batch_size]
        batch = collator(encoded.select(rows).to_list()).to(device)
        with torch.inference_mode():
            rewards = scorer(batch).cpu()  # (2B,): chosen rows, then rejected
        half = len(rows)
        scores |= {i: (float(rewards[k]), float(rewards[half + k])) for k, i in enumerate(rows)}
    return scores


def _join_ranks() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device(settings: ScoreSettings) -> torch.device:
    if settings.device is not None:
        return torch.device(settings.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _encode(
    raw: datasets.Dataset, settings: ScoreSettings, tokenizer: PreTrainedTokenizerBase
) -> datasets.Dataset:
    """One tokenised row per input row, in order; a malformed row holds only ``error``."""
    columns = check_columns(settings.columns)
    where = f"--dataset {settings.dataset!r}, split {settings.split!r}"
    data = map_columns(raw, columns, where) if columns else raw
    if len(data) == 0:
        raise DataError(f"{where}: the dataset is empty")
    fmt = settings.format
    fmt = detect_format(data.column_names, data[0], where) if fmt == "auto" else fmt
    if is_unpaired(fmt):
        raise DataError(f"{where}: format {fmt!r} is unpaired; scoring needs chosen/rejected pairs")
    truncation = Truncation(settings.max_length, settings.max_prompt_length)
    enc = Encoding(settings.dataset, fmt, truncation, settings.system_prompt, skip_bad_rows=True)
    return data.map(
        Encoder(enc, settings.split, tokenizer),
        batched=True,
        with_indices=True,
        remove_columns=data.column_names,
        features=PAIRED_FEATURES,
        keep_in_memory=True,  # nothing cached next to the user's files
        desc="tokenizing",
    )


def _gather(scores: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """Every rank's scores, on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return scores
    parts: list[dict | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, scores)
    return {i: pair for part in parts for i, pair in part.items()}


def _summary(
    output: str, errors: list[str | None], scores: dict[int, tuple[float, float]]
) -> ScoreSummary:
    gaps = torch.tensor([c - r for c, r in scores.values()], dtype=torch.float64)
    n = max(len(gaps), 1)
    return ScoreSummary(
        output=output,
        rows=len(errors),
        scored=len(scores),
        accuracy=float((gaps > 0).sum()) / n,
        mean_gap=float(gaps.sum()) / n,
        errors=tuple(e for e in errors if e is not None),
    )


def _with_scores(raw: datasets.Dataset, scores: dict[int, tuple[float, float]]) -> datasets.Dataset:
    """The input rows with new ``score_chosen``/``score_rejected`` columns (None: not scored)."""
    kept = raw.remove_columns([n for n in SCORE_FIELDS if n in raw.column_names])
    for k, name in enumerate(SCORE_FIELDS):
        values = [scores[i][k] if i in scores else None for i in range(len(raw))]
        kept = kept.add_column(name, values, feature=datasets.Value("float64"))
    return kept


def _write(data: datasets.Dataset, output: str) -> None:
    path = os.path.expanduser(output)
    suffix = os.path.splitext(path)[1]
    if suffix in (".jsonl", ".json"):
        data.to_json(path, lines=True, force_ascii=False)
    elif suffix == ".parquet":
        data.to_parquet(path)
    else:
        data.save_to_disk(path)


def build_parser():
    """The ``lit-align score`` argument parser (``--config`` YAML accepted)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="lit-align score",
        description="Score a preference dataset with a reward model into a new file "
        "(score_chosen / score_rejected columns).",
    )
    parser.add_argument("--config", action=ActionConfigFile)
    parser.add_class_arguments(ScoreSettings)
    return parser


def main(argv: list[str] | None = None) -> ScoreSummary:
    """Entry point of ``lit-align score``."""
    cfg = build_parser().parse_args(argv)
    settings = ScoreSettings(**{k: v for k, v in cfg.as_dict().items() if k != "config"})
    summary = score_dataset(settings)
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(summary.describe())
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary
