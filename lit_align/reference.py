"""Where reference log-probs come from: the frozen model, a precomputed cache, or nothing.

``--model.reference`` chooses (see :func:`resolve_mode`):

* ``model``: the frozen reference (with LoRA, the policy with its adapters disabled) scores
  every batch during training.
* ``precomputed``: ``AlignmentModule.on_fit_start`` (after the model is built, sharded and
  restored from a checkpoint, before any dataloader exists) calls :func:`precompute`: the frozen
  reference scores every row of the training and validation splits once — under
  ``torch.distributed`` each rank scores a share and the results are gathered to all ranks —
  and the values ride along with the rows as extra columns (``ref_<response>_logp``, plus
  ``ref_<response>_token_logps`` for losses that read per-token log-probs), which the collator
  turns into ``PreferenceBatch.reference_logps``. The reference model is then freed. The values
  are saved next to the tokenised data, in ``<data cache>/lit_align/reference/`` (one
  safetensors file per split), under a key hashing the model (name or path, revision, resolved
  config and commit, dtypes, and a checksum of the reference weights, which catches a local
  directory overwritten in place), the tokenizer, the tokenised split's fingerprint (raw data,
  encoding and code) and the truncation settings: a later run with the same key loads the
  file, any change computes anew.
* ``none``: no reference; implied for reference-free losses, refused for the others.

KTO-style KL rows pair each completion with another row's prompt of the same batch, so they
cannot be precomputed per row: use ``--model.reference model`` with them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, Protocol

import datasets
import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from datasets.fingerprint import Hasher
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from safetensors.numpy import load_file, save_file
from torch import nn
from torch.distributed.tensor import DTensor

from lit_align.collectives import world
from lit_align.data.collate import REF_SUM, REF_TOKENS, PreferenceCollator, Truncation
from lit_align.data.packing import row_dicts
from lit_align.data.prepare import tokenizer_fingerprint
from lit_align.losses.base import PreferenceLoss
from lit_align.models import PolicyConfig

ReferenceMode = Literal["model", "precomputed", "none"]
MODES = ("model", "precomputed", "none")
CACHE_VERSION = 1
"""Bump when the stored layout or the scoring changes: old files are then never read."""


class ReferenceData(Protocol):
    """What :func:`precompute` needs from the data module (``PreferenceDataModule`` has it)."""

    tokenizer: Any
    truncation: Truncation
    kl_rows: bool

    def scoring_splits(self) -> dict[str, datasets.Dataset]: ...

    def scoring_collator(self) -> PreferenceCollator: ...

    def scoring_batch_size(self) -> int: ...

    def reference_cache_dir(self) -> Path: ...

    def attach_reference_logps(self, split: str, columns: pa.Table) -> None: ...


def resolve_mode(requested: str | None, loss: PreferenceLoss) -> str:
    """The reference mode for ``loss``; None: ``model``, or ``none`` for reference-free losses.

    Raises:
        ValueError: an unknown mode, or ``none`` with a loss that needs a reference.
    """
    name = type(loss).__name__
    if requested is not None and requested not in MODES:
        raise ValueError(f"--model.reference must be one of {MODES} or null, got {requested!r}")
    if not loss.capabilities()["requires_reference"]:
        if requested not in (None, "none"):
            rank_zero_warn(f"--model.reference {requested} ignored: {name} needs no reference")
        return "none"
    if requested == "none":
        raise ValueError(
            f"--model.reference none: --model.loss {name} needs reference log-probs; set "
            "--model.reference model or precomputed, or pick a reference-free loss (SimPO, "
            "CPO, ORPO, SFT)"
        )
    return requested or "model"


def weights_fingerprint(model: nn.Module) -> str:
    """Hash of every parameter's name, shape, dtype, sum and squared norm (LoRA adapters skipped).

    Sharded (``DTensor``) parameters are reduced over their mesh, so every rank gets the same
    hash; values are rounded to 9 digits so summation order cannot change it.
    """
    names, stats, group = [], [], None
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        local = param.detach()
        if isinstance(local, DTensor):
            group, local = local.device_mesh.get_group(), local.to_local()
        names.append((name, tuple(param.shape), str(param.dtype)))
        norm = torch.linalg.vector_norm(local, dtype=torch.float64)
        stats.append(torch.stack([local.sum(dtype=torch.float64), norm.square()]))
    values = torch.stack(stats)  # (P, 2)
    if group is not None:
        dist.all_reduce(values, group=group)
    return Hasher.hash([names, [f"{v:.9e}" for v in values.flatten().tolist()]])


def model_identity(
    pretrained: str | None, revision: str | None, model: nn.Module, **settings: Any
) -> dict[str, Any]:
    """What decides the reference log-probs on the model side (part of the cache key).

    Args:
        pretrained: hub id or local directory (None for a model built from a config).
        revision: hub revision.
        model: the reference's Hugging Face model (for LoRA: the policy's; adapters skipped).
        settings: anything else that changes the values (dtypes, attention backend, ...).
    """
    config = model.config
    return {
        "pretrained": pretrained,
        "revision": revision,
        "commit": getattr(config, "_commit_hash", None),
        "config": config.to_dict(),
        "weights": weights_fingerprint(model),
        **settings,
    }


def cache_identity(
    reference: nn.Module, policy: nn.Module, cfg: PolicyConfig, trainer: Trainer
) -> dict[str, Any]:
    """:func:`model_identity` of a run's reference scorer, with the settings that change its
    values: the configured dtype and attention backend, the trainer's precision and FSDP2's
    compute dtype. A LoRA reference (no parameters of its own) is identified by the policy."""
    owner = reference if next(reference.parameters(), None) is not None else policy
    mixed = getattr(trainer.strategy, "mp_policy", None)  # FSDP2Strategy's compute dtype
    settings = {
        "dtype": cfg.dtype,
        "attn_implementation": cfg.attn_implementation,
        "precision": str(trainer.precision),
        "param_dtype": str(getattr(mixed, "param_dtype", None)),
    }
    return model_identity(cfg.pretrained, cfg.revision, owner.model, **settings)


def cache_key(
    model: dict[str, Any], tokenizer: str, data: str, truncation: Truncation, with_tokens: bool
) -> str:
    """Hash of everything the stored values depend on; any change gives another file."""
    trunc = dataclasses.asdict(truncation)
    return Hasher.hash([CACHE_VERSION, model, tokenizer, data, trunc, with_tokens])


def precompute(
    scorer: nn.Module,
    data: ReferenceData,
    model: dict[str, Any],
    with_tokens: bool,
    device: torch.device,
) -> dict[str, str]:
    """Load or compute the reference log-probs of every split and attach them to ``data``.

    A collective under ``torch.distributed``: every rank calls it. Rank 0 decides whether the
    cache file exists (other ranks need not share its file system) and broadcasts its values;
    otherwise each rank scores its share, the shares are gathered and rank 0 writes the file.

    Args:
        scorer: the frozen reference scorer (no gradients are computed).
        data: the data module.
        model: :func:`model_identity` of the reference.
        with_tokens: also store per-token log-probs (losses with ``needs_token_logps``).
        device: where to run the scorer.

    Returns:
        ``{split: "loaded" | "computed"}``.
    """
    if not hasattr(data, "attach_reference_logps"):
        raise ValueError(
            "--model.reference precomputed needs lit_align's PreferenceDataModule (--data), "
            "which serves the values with the rows; or set --model.reference model"
        )
    if data.kl_rows:
        raise ValueError(
            "--model.reference precomputed cannot serve KL rows (--data.kl_rows, KTO): they pair "
            "completions with other rows' prompts batch by batch; set --model.reference model"
        )
    tokenizer = tokenizer_fingerprint(data.tokenizer)
    status = {}
    for split, rows in data.scoring_splits().items():
        key = cache_key(model, tokenizer, rows._fingerprint, data.truncation, with_tokens)
        path = data.reference_cache_dir() / f"{split}-{key}.safetensors"
        values = _broadcast(_load(path) if world()[1] == 0 and path.exists() else None)
        status[split] = "loaded" if values is not None else "computed"
        if values is None:
            values = _score(scorer, rows, data, with_tokens, device)
            if world()[1] == 0:
                _save(path, values)
        data.attach_reference_logps(split, _columns(values, _fields(rows)))
        rank_zero_info(f"reference log-probs of {split}: {status[split]} ({path})")
    return status


def _fields(rows: datasets.Dataset) -> tuple[str, ...]:
    return ("completion",) if "completion_ids" in rows.column_names else ("chosen", "rejected")


def _score(
    scorer: nn.Module, rows: datasets.Dataset, data: ReferenceData, with_tokens: bool, device
) -> dict[str, np.ndarray]:
    """Score this rank's share of ``rows`` (longest first: little padding), gather all shares.

    Every rank runs the same number of batches (the last batch repeats where a rank has none
    left), as a sharded reference needs all ranks in each forward.
    """
    num_ranks, rank = world()
    lengths = rows["length"]
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    size = data.scoring_batch_size()
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    mine = batches[rank::num_ranks]
    collate, fields, scored = data.scoring_collator(), _fields(rows), {}
    plain = rows.with_format(None)
    for step in range(-(-len(batches) // num_ranks)):
        index = mine[step] if step < len(mine) else batches[-1]
        batch = collate(row_dicts(plain, index)).to(device)
        with torch.no_grad():
            out = scorer(batch, with_tokens, False)
        if step < len(mine):
            scored.update(_per_row(index, batch.response_mask, out, len(fields)))
    if num_ranks > 1:
        shares = [None] * num_ranks
        dist.all_gather_object(shares, scored)
        scored = {i: v for share in shares for i, v in share.items()}
    return _stack([scored[i] for i in range(len(rows))], fields, with_tokens)


def _per_row(index: list[int], response, out, num_fields: int) -> dict[int, list]:
    """``{row: [(sum, response token log-probs or None) per field]}`` of one scored batch."""
    sums = out.sum.float().cpu().numpy()  # (K·B,): field-major, as the collator lays rows out
    tokens = None if out.token_logps is None else out.token_logps.float().cpu()
    response = response.cpu()
    result = {}
    for b, row in enumerate(index):
        seqs = [k * len(index) + b for k in range(num_fields)]
        result[row] = [
            (sums[j], None if tokens is None else tokens[j][response[j]].numpy()) for j in seqs
        ]
    return result


def _stack(values: list[list], fields: tuple[str, ...], with_tokens: bool) -> dict[str, np.ndarray]:
    """The file layout: ``sum (R, K)``, and per field ``tokens_<f>`` flat with ``lengths_<f>``."""
    out = {"sum": np.array([[s for s, _ in row] for row in values], dtype=np.float32)}
    for k, field in enumerate(fields if with_tokens else ()):
        per_row = [row[k][1] for row in values]
        out[f"tokens_{field}"] = np.concatenate(per_row).astype(np.float32)
        out[f"lengths_{field}"] = np.array([len(t) for t in per_row], dtype=np.int64)
    return out


def _columns(values: dict[str, np.ndarray], fields: tuple[str, ...]) -> pa.Table:
    """The extra dataset columns: ``ref_<f>_logp`` and, when stored, ``ref_<f>_token_logps``."""
    columns = {}
    for k, field in enumerate(fields):
        columns[REF_SUM.format(field)] = pa.array(values["sum"][:, k])
        if f"tokens_{field}" in values:
            offsets = np.concatenate([[0], np.cumsum(values[f"lengths_{field}"])])
            flat = pa.array(values[f"tokens_{field}"])
            columns[REF_TOKENS.format(field)] = pa.ListArray.from_arrays(offsets, flat)
    return pa.table(columns)


def _save(path: Path, values: dict[str, np.ndarray]) -> None:
    """Write atomically: a crash leaves no half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(values, str(tmp), metadata={"version": str(CACHE_VERSION)})
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (itself when not distributed)."""
    if world()[0] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
