"""FSDP2 training: the strategy preset, the sharding helper, and the global gradient norm.

Select the preset from YAML; one process per device, started by Lightning, torchrun or SLURM::

    trainer:
      devices: 8           # processes per node; must match the launcher's
      num_nodes: 2         # must match the launcher's node count
      precision: 32-true   # mixed precision comes from param_dtype, not from the trainer
      strategy:
        class_path: lit_align.distributed.FSDP2Strategy
        init_args: {param_dtype: bfloat16}

On the command line: ``--trainer.strategy=fsdp2`` (the registered name, default arguments) or
``--trainer.strategy=FSDP2Strategy --trainer.strategy.param_dtype=float32``. A bare class path
with no argument is taken for a strategy *name* and refused by Lightning; write
``--trainer.strategy.class_path=lit_align.distributed.FSDP2Strategy`` instead.

Every parameter of the policy (and of the frozen reference) becomes a ``DTensor`` sharded
``Shard(0)`` over all ``devices × num_nodes`` ranks, and each rank sees its own part of every
global batch. Activation checkpointing is a model setting (``--model.activation_checkpointing``):
the module applies it while building the model, before :meth:`FSDP2Strategy.shard`, so one flag
serves sharded and unsharded runs.

Checkpoints are directories of shards that load on any number of ranks, written crash-safely: a
run killed in the middle of a save keeps its previous checkpoint (:mod:`lit_align.checkpointing`).
Resume with ``--ckpt_path last`` (the newest ``last*.ckpt`` of the ``ModelCheckpoint`` directory).
"""

from __future__ import annotations

import atexit
from collections.abc import Generator, Iterable, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry
from torch import Tensor
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import (
    CPUOffloadPolicy,
    FSDPModule,
    MixedPrecisionPolicy,
    OffloadPolicy,
    fully_shard,
)

from lit_align import checkpointing, safe_unpickle
from lit_align.collectives import destroy_process_group
from lit_align.launchers import launcher_mismatch
from lit_align.scorer import CausalLMScorer

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def global_grad_norm(parameters: Iterable[torch.nn.Parameter]) -> Tensor:
    """The L2 norm of all gradients, as if unsharded; a collective under FSDP2.

    Sharded (``DTensor``) gradients give a partial norm per rank; ``full_tensor()`` reduces it,
    so every rank must call this on the same step. Lightning's ``grad_norm`` utility crashes on
    such gradients, and local shard norms would be wrong.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def shard_scorer(
    scorer: CausalLMScorer,
    mesh: DeviceMesh,
    mp_policy: MixedPrecisionPolicy | None = None,
    reshard_after_forward: bool = True,
    offload_policy: OffloadPolicy | None = None,
) -> CausalLMScorer:
    """Apply FSDP2 to each decoder layer of ``scorer.model``, then to ``scorer`` as the root.

    The root call is mandatory: it shards what the layers leave out (embeddings, final norm,
    lm_head), without which gradient clipping meets mixed ``Tensor``/``DTensor`` gradients.
    Activation checkpointing, if wanted, must already be applied. Works in place.

    Args:
        scorer: the policy or a frozen reference; its parameters become ``DTensor`` ``Shard(0)``.
        mesh: the 1-D data-parallel mesh to shard over.
        mp_policy: compute/all-gather and reduce-scatter dtypes; None keeps the model's dtype.
        reshard_after_forward: free gathered parameters after each forward (False keeps them
            until backward; never use False for a frozen reference, which has no backward).
        offload_policy: ``CPUOffloadPolicy()`` keeps the shards in CPU memory.
    """
    options = {
        "mesh": mesh,
        "mp_policy": mp_policy or MixedPrecisionPolicy(),
        "offload_policy": offload_policy or OffloadPolicy(),
        "reshard_after_forward": reshard_after_forward,
    }
    for layer in scorer.blocks():
        fully_shard(layer, **options)
    fully_shard(scorer, **options)
    return scorer


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 over all ranks: ``data_parallel_size = num_nodes × devices``, no tensor parallelism.

    ``ModelParallelStrategy``'s defaults shard nothing on one node; this preset fills in the
    sizes from the world size and shards the module's scorers (see :func:`shard_for_trainer`).
    Keep ``--trainer.precision=32-true``: sharded master weights and optimizer states keep the
    model's dtype (float32 unless ``--model.policy.dtype`` says otherwise) and ``param_dtype``
    sets the compute dtype.

    Args:
        param_dtype: dtype of the all-gathered parameters and the compute (``bfloat16``,
            ``float16``); ``float32`` disables mixed precision.
        reduce_dtype: dtype of the gradient reduce-scatter.
        reshard_after_forward: free each layer's gathered parameters after its forward (less
            memory, one more all-gather in backward). The frozen reference always reshards.
        reduce_every_micro_batch: with gradient accumulation, reduce-scatter after every
            micro-batch (gradients stay sharded). False reduces once per optimizer step and
            accumulates unsharded local gradients in between: less traffic, more memory.
        cpu_offload: keep sharded parameters, gradients and optimizer states in CPU memory
            (CUDA only).
        save_distributed_checkpoint: a directory with one shard file per rank (reshardable to any
            world size), renamed into place once complete; False assembles a single file on
            rank 0 (Lightning's atomic single-file save).
        process_group_backend: ``nccl``, ``gloo``, …; None picks by device
            (``cuda:nccl,cpu:gloo`` with ``cpu_offload``, whose gradients live on the CPU).
        timeout: timeout of collective operations (``H:MM:SS`` on the command line).
        trust_checkpoint: load sharded checkpoints with plain ``pickle`` (any object, any code
            they name). False (the default) admits only the checkpoint format's own types:
            see :mod:`lit_align.safe_unpickle`.
    """

    def __init__(
        self,
        param_dtype: str = "bfloat16",
        reduce_dtype: str = "float32",
        reshard_after_forward: bool = True,
        reduce_every_micro_batch: bool = False,
        cpu_offload: bool = False,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
        trust_checkpoint: bool = False,
    ) -> None:
        for flag, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value not in _DTYPES:
                raise ValueError(
                    f"--trainer.strategy.init_args.{flag} must be one of {sorted(_DTYPES)}, "
                    f"got {value!r}"
                )
        if cpu_offload and process_group_backend is None:
            process_group_backend = "cuda:nccl,cpu:gloo"
        super().__init__(
            data_parallel_size="auto",  # set to the world size in setup_environment
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        self.mp_policy = MixedPrecisionPolicy(
            param_dtype=_DTYPES[param_dtype], reduce_dtype=_DTYPES[reduce_dtype]
        )
        self.reshard_after_forward = reshard_after_forward
        self.reduce_every_micro_batch = reduce_every_micro_batch
        self.cpu_offload = cpu_offload
        self.trust_checkpoint = trust_checkpoint

    def setup_environment(self) -> None:
        """Validate the launch and precision, then join the process group and build the mesh."""
        problem = launcher_mismatch(self.cluster_environment, self.num_processes, self.num_nodes)
        if problem:
            raise ValueError(problem)
        precision = getattr(self.precision_plugin, "precision", "32-true")
        if precision != "32-true":
            raise ValueError(
                f"FSDP2Strategy needs --trainer.precision=32-true, got {precision!r}; set the "
                "compute dtype with --trainer.strategy.init_args.param_dtype instead"
            )
        if self.cpu_offload and self.root_device.type != "cuda":
            raise ValueError(
                "--trainer.strategy.init_args.cpu_offload=true needs CUDA devices, got "
                f"{self.root_device}; set it to false"
            )
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()
        # Leaving gloo's threads to interpreter teardown crashed 3 of 45 CPU runs after their work
        # was done (rc 134, "terminate called without an active exception"): destroy it first.
        atexit.unregister(destroy_process_group)  # once, however many times fit/validate run
        atexit.register(destroy_process_group)

    def shard(self, policy: CausalLMScorer, frozen: Sequence[CausalLMScorer] = ()) -> None:
        """Shard the policy and the frozen scorers (no gradients, eval mode) over all ranks."""
        mesh = self.device_mesh["data_parallel"]
        offload = CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy()
        shard_scorer(policy, mesh, self.mp_policy, self.reshard_after_forward, offload)
        for scorer in frozen:
            shard_scorer(scorer, mesh, self.mp_policy, True, offload)

    @contextmanager
    def block_backward_sync(self) -> Generator[None, None, None]:
        """Lightning enters this around micro-batches that do not end an accumulation."""
        if self.reduce_every_micro_batch:
            yield
            return
        sharded = [m for m in self.model.modules() if isinstance(m, FSDPModule)]
        for module in sharded:
            module.set_requires_gradient_sync(False, recurse=False)
        try:
            yield
        finally:
            for module in sharded:
                module.set_requires_gradient_sync(True, recurse=False)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: str | Path, storage_options: Any = None
    ) -> None:
        """Write a sharded checkpoint into ``<filepath>.partial``, then rename it into place.

        The rename (rank 0, :func:`lit_align.checkpointing.commit`) happens only after every
        rank has written its shards, so a crash mid-save leaves the previous ``filepath``
        intact. Single-file checkpoints keep Lightning's own ``_atomic_save``.
        """
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        target = Path(self.broadcast(str(filepath)))
        staging = checkpointing.staging_path(target)
        if self.is_global_zero:
            checkpointing.remove(staging)  # left by a save that crashed
        self.barrier("checkpoint staging")
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier("checkpoint written")  # every rank's shards are on disk
        if self.is_global_zero:
            checkpointing.commit(staging, target)
        self.barrier("checkpoint committed")

    def load_checkpoint(
        self, checkpoint_path: str | Path, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Clean the leftovers of an interrupted save of ``checkpoint_path`` (rank 0), then load.

        A sharded checkpoint is read without running code from it unless ``trust_checkpoint``
        (:mod:`lit_align.safe_unpickle`); a single file goes through Lightning's own loader.
        """
        path = Path(self.broadcast(str(checkpoint_path)))
        if self.is_global_zero:
            checkpointing.recover(path)
        self.barrier("checkpoint recovered")
        checkpointing.check_loadable(path, sharded_ok=True)
        if not path.is_dir():
            return super().load_checkpoint(path, weights_only=weights_only)
        return self._load_sharded(path, weights_only)

    def _load_sharded(self, path: Path, weights_only: bool | None) -> dict[str, Any]:
        """Lightning's sharded load (``model_parallel._load_checkpoint``) with the safe reader."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_optimizer_state_dict,
        )

        module, trusted = self.model, self.trust_checkpoint
        state = {"state_dict": get_model_state_dict(module)}
        safe_unpickle.load_dcp(state, path, trusted)
        module.load_state_dict(state["state_dict"], strict=self.lightning_module.strict_loading)
        for index, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{index}"
            optim_state = {key: get_optimizer_state_dict(module, optimizer)}
            safe_unpickle.load_dcp(optim_state, path, trusted)
            options = StateDictOptions(cpu_offload=True)
            set_optimizer_state_dict(module, optimizer, optim_state[key], options=options)
        return safe_unpickle.load_lightning_meta(path, trusted, weights_only)

    def model_to_device(self) -> None:
        """Move the module to its device; with ``cpu_offload``, leave the sharded scorers alone.

        Lightning's ``model.to(device)`` would move the offloaded shards back to the GPU.
        """
        if not self.cpu_offload:
            return super().model_to_device()
        for child in self.model.children():
            if not isinstance(child, FSDPModule):  # the sharded roots place their own states
                child.to(self.root_device)


StrategyRegistry.register(
    "fsdp2", FSDP2Strategy, description="lit_align FSDP2 over all ranks, bf16", override=True
)


def shard_for_trainer(
    trainer: Trainer | None, policy: CausalLMScorer, frozen: Sequence[CausalLMScorer] = ()
) -> None:
    """Shard ``policy`` and ``frozen`` when the trainer runs :class:`FSDP2Strategy`, else nothing.

    Called from ``AlignmentModule.configure_model`` after the model is built (and activation
    checkpointing applied). A bare ``ModelParallelStrategy`` is refused: with its defaults every
    rank would train a full, unsharded copy on the same batches.
    """
    strategy = trainer.strategy if trainer is not None else None
    if isinstance(strategy, FSDP2Strategy):
        strategy.shard(policy, frozen)
    elif isinstance(strategy, ModelParallelStrategy):
        raise ValueError(
            f"trainer.strategy {type(strategy).__name__} is not supported: use "
            "class_path: lit_align.distributed.FSDP2Strategy, which shards the model"
        )
