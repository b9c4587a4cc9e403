"""A seeded, rank-aware, optionally length-grouped sampler and a loader that resumes mid-epoch.

How this fits Lightning 2.6 (checked in its source, ``trainer/connectors/data_connector.py`` and
``loops/fit_loop.py``):

* Lightning swaps in a ``DistributedSampler`` only when the loader's ``sampler`` is not already
  one (``_requires_distributed_sampler``). :class:`ResumableSampler` *is* a
  ``DistributedSampler``: it shards by rank itself (reading ``torch.distributed`` when it is
  initialised), so Lightning leaves it alone and configs keep the default
  ``trainer.use_distributed_sampler: true`` (``false`` works too: nothing else is injected).
* Lightning calls ``sampler.set_epoch(epoch)`` before each epoch: the order is a function of
  ``seed`` and the epoch only, identical on every run.
* Lightning saves the ``state_dict()`` of every training loader that has ``state_dict`` /
  ``load_state_dict`` in the checkpoint (``loops.fit_loop.state_dict.combined_loader``) and,
  when it resumes mid-epoch, calls ``load_state_dict`` before iterating. With a sized loader it
  prefetches nothing, so the batches this loader has yielded are exactly the batches trained
  on. :class:`ResumableLoader` records ``(epoch, batches yielded)`` and, after
  ``load_state_dict``, yields the rest of that epoch: no batch repeated, none skipped.
  Lightning drops that saved state when the loader was built before the loops' state is read
  (``estimated_stepping_batches``, issue #20550), so the datamodule also saves the position
  itself through :class:`LoaderPosition`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from lit_align.collectives import world

GROUP_BATCHES = 50
"""Length grouping sorts windows of this many batches (``transformers``' mega-batches)."""


class ResumableSampler(DistributedSampler):
    """Indices of this rank's share of ``num_rows`` rows, laid out batch by batch.

    Each epoch the rows are shuffled with ``seed + epoch`` (or kept in order), padded by
    repetition to a multiple of the world size and dealt round-robin to the ranks, as
    ``DistributedSampler`` does. With ``lengths``, each rank's share is cut into windows of
    :data:`GROUP_BATCHES` batches, each window sorted by length and cut into batches, and the
    full batches are shuffled (the one short batch, if any, comes last) so a batch holds rows of
    similar length and padding shrinks. Consecutive ``batch_size`` indices form one batch.

    Args:
        num_rows: rows in the dataset.
        batch_size: rows per batch on this rank.
        lengths: tokens of each row, to group by length; None to not group.
        shuffle: shuffle rows (and batches) every epoch.
        seed: seed of the shuffle.
        num_replicas: world size; default from ``torch.distributed``.
        rank: this rank; default from ``torch.distributed``.
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        lengths: list[int] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        default_replicas, default_rank = world()
        num_replicas = default_replicas if num_replicas is None else num_replicas
        rank = default_rank if rank is None else rank
        super().__init__(range(num_rows), num_replicas, rank, shuffle=shuffle, seed=seed)
        if lengths is not None and len(lengths) != num_rows:
            raise ValueError(f"lengths has {len(lengths)} entries for {num_rows} rows")
        self.batch_size, self.lengths = batch_size, lengths
        self.start_batch = 0  # batches of the next iteration to skip (set when resuming)

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        start, self.start_batch = self.start_batch * self.batch_size, 0
        return iter(order[start:])

    def order(self) -> list[int]:
        """This rank's indices for the current epoch, batch by batch."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.dataset)
        rows = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        rows = (rows * -(-self.total_size // n))[: self.total_size]  # pad by repetition
        mine = rows[self.rank : self.total_size : self.num_replicas]  # (num_samples,)
        return mine if self.lengths is None else self._grouped(mine, g)

    def _grouped(self, rows: list[int], g: torch.Generator) -> list[int]:
        size, window = self.batch_size, self.batch_size * GROUP_BATCHES
        batches = []
        for w in range(0, len(rows), window):
            ranked = sorted(rows[w : w + window], key=lambda i: -self.lengths[i])
            batches += [ranked[b : b + size] for b in range(0, len(ranked), size)]
        full = [b for b in batches if len(b) == size]
        if self.shuffle:
            full = [full[i] for i in torch.randperm(len(full), generator=g).tolist()]
        return [i for batch in full + [b for b in batches if len(b) < size] for i in batch]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` that can resume mid-epoch.

    It counts the batches it has yielded in the sampler's current epoch; ``state_dict()``
    returns ``{"epoch", "batches", "layout"}`` and ``load_state_dict`` makes the next iteration
    yield the rest of that epoch. A mid-epoch position needs the same layout (rows, batch size,
    world size, seed, grouping); one at an epoch boundary (Lightning restores those too when
    training by ``max_steps``) fits any. ``len()`` stays the full epoch. Iterating again after
    ``set_epoch`` starts the new epoch from its first batch; iterating again in the same epoch
    continues where the last iteration stopped, or starts over once the epoch was finished.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch, self._batches = self._sampler_epoch(), 0

    def __iter__(self) -> Iterator[Any]:
        epoch = self._sampler_epoch()
        if epoch != self._epoch or self._batches >= len(self):
            self._epoch, self._batches = epoch, 0
        if isinstance(self.sampler, ResumableSampler):
            self.sampler.start_batch = self._batches
        for batch in super().__iter__():
            self._batches += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "batches": self._batches, "layout": self._layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``'s position; a position at an epoch boundary fits any layout."""
        done, total = state["batches"], state["layout"]["batches"]
        if 0 < done < total and state["layout"] != self._layout():
            raise ValueError(
                "cannot resume the training data mid-epoch: the checkpoint's loader had "
                f"{state['layout']}, this run has {self._layout()}. Resume with the same data, "
                "--data.batch_size, --data.seed, --data.group_by_length and number of devices, "
                "or from an end-of-epoch checkpoint"
            )
        self.sampler.set_epoch(state["epoch"])
        self._epoch, self._batches = state["epoch"], len(self) if done >= total else done

    def _sampler_epoch(self) -> int:
        return getattr(self.sampler, "epoch", 0)

    def _layout(self) -> dict[str, Any]:
        """What must match for a saved position to mean the same batches."""
        s = self.sampler
        return {
            "rows": len(self.dataset),
            "batches": len(self),
            "batch_size": self.batch_size,
            "num_replicas": getattr(s, "num_replicas", 1),
            "seed": getattr(s, "seed", None),
            "grouped": getattr(s, "lengths", None) is not None,
        }


class LoaderPosition:
    """The training loader's position, saved and restored through the datamodule's state.

    Lightning saves a loader's ``state_dict`` itself, but drops it on resume when
    ``configure_optimizers`` reads ``trainer.estimated_stepping_batches`` (as
    ``AlignmentModule`` does): that builds the loader before the loops' state is read (Lightning
    issue #20550), and the epoch would start over. A datamodule's state is restored in every
    case: before the loader is built (the position waits in ``pending``) or after it (FSDP2
    restores after setup).
    """

    def __init__(self) -> None:
        self.loader: ResumableLoader | None = None
        self.pending: dict | None = None

    def track(self, loader: ResumableLoader) -> ResumableLoader:
        """Remember ``loader`` and move it to a position restored before it existed."""
        self.loader = loader
        if self.pending is not None:
            loader.load_state_dict(self.pending)
            self.pending = None
        return loader

    def state_dict(self) -> dict:
        return {"train_loader": self.loader.state_dict()} if self.loader is not None else {}

    def load_state_dict(self, state: dict) -> None:
        position = state.get("train_loader")
        if position is not None and self.loader is not None:
            self.loader.load_state_dict(position)
        else:
            self.pending = position
