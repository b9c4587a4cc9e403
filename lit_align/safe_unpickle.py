"""Load sharded (DCP) checkpoints without running code from them.

``torch.distributed.checkpoint`` reads a checkpoint directory's ``.metadata`` with a plain
``pickle.load`` and every non-tensor value of its ``.distcp`` shards with
``torch.load(weights_only=False)``: a crafted file runs any code it names. Here ``.metadata`` is
read by :class:`RestrictedUnpickler`, which admits only the types that file legitimately holds
(the dataclasses of ``torch.distributed.checkpoint.metadata``, ``torch.Size``, dtypes, layouts,
paths and builtin containers), and non-tensor values with ``torch.load(weights_only=True)``.
Anything else is refused with :class:`UnsafeCheckpointError` before it is called.

Opt-out, for checkpoints you made yourself and that hold other objects:
``--trainer.strategy.init_args.trust_checkpoint=true`` (``fit``, rollbacks) or
``lit-align export --trust_checkpoint=true``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

_METADATA_MODULE = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
    *(("builtins", name) for name in ("set", "frozenset", "bytearray", "slice", "complex")),
}
OPT_OUT = (
    "--trainer.strategy.init_args.trust_checkpoint=true (lit-align export: --trust_checkpoint=true)"
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file names something its format never holds; nothing of it was run."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a DCP ``.metadata`` file contains."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == _METADATA_MODULE or (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise UnsafeCheckpointError(
            f"{self.source}: refused to load {module}.{name}, which a distributed checkpoint's "
            f"metadata never holds (the file may be crafted to run code); if you made this "
            f"checkpoint and trust it, pass {OPT_OUT}"
        )


class SafeFileSystemReader(FileSystemReader):
    """``FileSystemReader`` whose ``.metadata`` goes through :class:`RestrictedUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = RestrictedUnpickler(stream, str(path)).load()
        if not isinstance(metadata, Metadata):
            raise UnsafeCheckpointError(f"{path}: holds {type(metadata).__name__}, not Metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """``DefaultLoadPlanner`` that reads non-tensor values with ``weights_only=True``."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        try:
            loaded = torch.load(value, weights_only=True)
        except pickle.UnpicklingError as error:
            fqn = read_item.dest_index.fqn
            raise UnsafeCheckpointError(
                f"checkpoint value {fqn!r} refused by torch.load(weights_only=True) ({error}); "
                f"if you made this checkpoint and trust it, pass {OPT_OUT}"
            ) from error
        if self.flatten_state_dict:  # as DefaultLoadPlanner.load_bytes, with the safe load
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def load_dcp(state: dict[str, Any], path: str | Path, trusted: bool = False) -> None:
    """``dcp.load(state, path)`` in place; restricted unless ``trusted`` (see the module doc).

    Raises:
        UnsafeCheckpointError: on every rank, when the checkpoint names a refused object.
    """
    if trusted:
        dcp.load(state, checkpoint_id=path)
        return
    reader = SafeFileSystemReader(path)
    reader.read_metadata()  # raises here, unwrapped, before any collective
    try:
        dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner())
    except CheckpointException as error:
        refused = [e for e, _ in error.failures.values() if isinstance(e, UnsafeCheckpointError)]
        if refused:
            raise refused[0] from None
        raise


def load_lightning_meta(path: Path, trusted: bool, weights_only: bool | None) -> dict[str, Any]:
    """Lightning's ``meta.pt`` of a sharded checkpoint: weights-only unless ``trusted``."""
    only = weights_only if trusted else True
    return torch.load(path / "meta.pt", map_location="cpu", weights_only=only)
