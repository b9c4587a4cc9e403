"""AlignmentModule: one LightningModule for every preference loss.

The loss is a swappable strategy (``--model.loss DPO|SPO|BNF|...``); the module reads its
capability flags to decide whether a reference model is built and run and which per-token
quantities to compute, and never branches on the loss class.

Reference log-probs come from the frozen model, from a cache computed once before training, or
from nowhere (``--model.reference model|precomputed|none``, see :mod:`lit_align.reference`).
``--model.compile true`` compiles each decoder layer; on CUDA, Adam and AdamW run fused unless
the optimizer's ``fused`` or ``foreach`` was set. The host syncs left in a step are listed in
``BENCHMARKS.md`` ("Host synchronisation").

Documented attributes for callbacks (read-only for them):
    policy: the trained :class:`~lit_align.scorer.CausalLMScorer`; ``policy.model`` is the HF
        model.
    tokenizer: the tokenizer the data and the export use.
    loss: the :class:`~lit_align.losses.PreferenceLoss`; callbacks read its capability flags.
    reference_mode: ``model``, ``precomputed`` or ``none`` (``--model.reference``).
    grad_norm: global pre-clip gradient L2 norm of the current optimizer step (a 0-dim tensor,
        identical on every rank), set after the last backward of the step, before
        ``on_before_optimizer_step``. A callback may veto the update from that hook with
        ``optimizer.zero_grad(set_to_none=True)``: parameters without gradients are left untouched.

Logged every step besides the loss's metrics: ``learning_rate`` (of the first parameter group),
``grad_norm`` and, with ``--trainer.gradient_clip_val``, ``clip_fraction``: the fraction of this
process's optimizer steps whose pre-clip norm exceeded the clip value.
"""

from __future__ import annotations

import gc
import inspect
from typing import Any

import torch
from jsonargparse import lazy_instance
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torch.distributed.tensor import DTensor

from lit_align.callbacks.preemption import PreemptionCheckpoint
from lit_align.callbacks.resume_guard import ResumeGuard
from lit_align.callbacks.weight_guard import WeightGuard
from lit_align.data.datamodule import PreferenceDataModule
from lit_align.distributed import global_grad_norm, shard_for_trainer
from lit_align.lora import AdapterDisabledScorer, apply_lora
from lit_align.losses import DPO, PreferenceLoss
from lit_align.meta_init import load_sharded, meta_init_enabled
from lit_align.models import PolicyConfig, build_causal_lm, check_vocab, load_tokenizer
from lit_align.optim import LRSchedule
from lit_align.records import make_record, reward_metrics
from lit_align.reference import ReferenceMode, cache_identity, precompute, resolve_mode
from lit_align.scorer import CausalLMScorer, compile_blocks, frozen_copy
from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps, StepRecord

DEFAULT_POLICY = PolicyConfig(
    tokenizer="builtin:sort",
    config={
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
    },
)
DEFAULT_SCHEDULE = LRSchedule()
DEFAULT_LOSS = lazy_instance(DPO)


class AlignmentModule(LightningModule):
    """Trains a causal LM with a preference (or SFT) loss.

    Args:
        policy: which model to train (hub id, local directory, or a new model from a config);
            None trains the embedded task's tiny Llama (``DEFAULT_POLICY``).
        loss: the loss strategy; any :class:`~lit_align.losses.PreferenceLoss` subclass.
        optimizer: optimizer factory applied to the trainable parameters.
        schedule: learning-rate warm-up and decay over the run's optimizer steps.
        logps_chunk_size: response tokens projected through the lm_head at a time.
        activation_checkpointing: recompute decoder activations in backward to save memory.
        reference: where reference log-probs come from: ``model`` (the frozen reference, each
            step), ``precomputed`` (once, before training, cached; the model is then freed) or
            ``none``; None picks ``model``, or ``none`` for reference-free losses.
        compile: ``torch.compile`` each decoder layer (after activation checkpointing, before
            FSDP2 sharding).
    """

    def __init__(
        self,
        policy: PolicyConfig | None = None,
        loss: PreferenceLoss = DEFAULT_LOSS,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: LRSchedule = DEFAULT_SCHEDULE,
        logps_chunk_size: int = 1024,
        activation_checkpointing: bool = False,
        reference: ReferenceMode | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if logps_chunk_size < 1:
            raise ValueError(f"--model.logps_chunk_size must be >= 1, got {logps_chunk_size}")
        self.policy_config = policy or DEFAULT_POLICY
        self.loss = loss
        self.optimizer_factory = optimizer
        self.schedule = schedule
        self.logps_chunk_size = logps_chunk_size
        self.activation_checkpointing = activation_checkpointing
        self.reference_mode = resolve_mode(reference, loss)
        self.compile_decoder = compile
        self._tokenizer = None
        self.policy: CausalLMScorer | None = None
        # Not a registered submodule: never saved in checkpoints, never optimised.
        self._reference: list[CausalLMScorer] = []
        self.grad_norm: Tensor = torch.zeros(())
        self._clip_counts = torch.zeros(2)  # steps whose norm exceeded the clip, steps clipped
        self._batch_idx = 0  # of the training batch being run (on_train_batch_start)

    # ------------------------------------------------------------------ model
    @property
    def tokenizer(self):
        """The policy's tokenizer, loaded on first use (parsing a config touches no files)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.policy_config)
        return self._tokenizer

    def connect_data(self, data: PreferenceDataModule) -> None:
        """Push into ``data`` what it needs from this module: the loss, the tokenizer (lazily).

        ``lit-align`` calls it after building both; call it yourself before ``Trainer.fit``
        when you build them in Python.
        """
        data.connect(self.loss, lambda: self.tokenizer)

    def prepare_data(self) -> None:
        """Checks that need only the configs, before the data module tokenises anything."""
        check_vocab(self.policy_config, self.tokenizer)

    def configure_model(self) -> None:
        """Build the policy (and the frozen reference when the loss needs one), then shard them.

        With LoRA the reference is the policy with its adapters disabled (no copy); with meta
        init (large pretrained models under FSDP2) the weights are loaded after sharding.
        """
        if self.policy is not None:
            return
        cfg = self.policy_config
        meta = meta_init_enabled(cfg, self._trainer)
        model = build_causal_lm(cfg, self.tokenizer, meta=meta)
        model.config.use_cache = False
        frozen, needs_reference = [], self.loss.capabilities()["requires_reference"]
        if needs_reference and cfg.lora is None:
            frozen = [frozen_copy(CausalLMScorer(model, self.logps_chunk_size, cfg.decoder_layers))]
        if self.activation_checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model = apply_lora(model, cfg.lora)
        self.policy = CausalLMScorer(model, self.logps_chunk_size, cfg.decoder_layers)
        self.policy.train()  # from_pretrained returns eval mode
        if self.compile_decoder:
            compile_blocks(self.policy, *frozen)
        shard_for_trainer(self._trainer, self.policy, frozen)  # FSDP2Strategy only
        if meta:
            device = self._trainer.strategy.root_device
            load_sharded(cfg, self.tokenizer, [self.policy, *frozen], device)
        if needs_reference and cfg.lora is not None:
            frozen = [AdapterDisabledScorer(self.policy)]
        self._reference = frozen

    @property
    def reference(self) -> CausalLMScorer | None:
        """The frozen reference scorer, on the policy's device; None if the loss needs none.

        With LoRA it is :class:`~lit_align.lora.AdapterDisabledScorer` (no parameters of its own).
        """
        if not self._reference:
            return None
        ref = self._reference[0]
        param = next(ref.parameters(), None)  # None: the LoRA policy with adapters disabled
        # Sharded (DTensor) references were placed by FSDP2, possibly offloaded: leave them.
        if param is not None and not isinstance(param, DTensor) and param.device != self.device:
            ref.to(self.device)
        return ref

    def transfer_batch_to_device(self, batch: PreferenceBatch, device, dataloader_idx: int):
        return batch.to(device)

    # ------------------------------------------------------------------- step
    def forward(self, batch: PreferenceBatch) -> tuple[LossOutput, StepRecord]:
        """Policy log-probs → reference log-probs → loss, and the detached step record."""
        caps = self.loss.capabilities()
        if batch.paired and not caps["needs_rejected"]:
            batch = batch.chosen_only()  # (B, T): the rejected rows are never scored
        policy = self.policy(batch, caps["needs_token_logps"], caps["needs_token_entropy"])
        reference = self._reference_logps(batch) if caps["requires_reference"] else None
        out = self.loss(policy, reference, batch)
        return out, make_record(out, policy, reference, batch, self.loss)

    def _reference_logps(self, batch: PreferenceBatch) -> SequenceLogps:
        if batch.reference_logps is not None:
            return batch.reference_logps
        if self.reference is None:
            raise RuntimeError(
                "the loss needs reference log-probs, but the batch carries none and no reference "
                f"model is loaded (--model.reference {self.reference_mode})"
            )
        with torch.no_grad():
            return self.reference(batch, self.loss.capabilities()["needs_token_logps"], False)

    def training_step(self, batch: PreferenceBatch, batch_idx: int) -> dict[str, Any]:
        out, record = self(batch)
        self._log_metrics(record, prefix="", batch_size=batch.num_examples)
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]  # the rate this step applies
        self.log("learning_rate", lr, on_step=True, on_epoch=False, batch_size=1)
        return {"loss": out.loss, "record": record}

    def validation_step(self, batch: PreferenceBatch, batch_idx: int) -> None:
        _, record = self(batch)
        self._log_metrics(record, prefix="val_", batch_size=batch.num_examples)

    def _log_metrics(self, record: StepRecord, prefix: str, batch_size: int) -> None:
        metrics = {**reward_metrics(record), **record.metrics}
        training = prefix == ""
        options = {
            "on_step": training,
            "on_epoch": not training,
            "sync_dist": not training,  # step values stay local: no collective per step
            "batch_size": batch_size,
        }
        loss = self._global_loss(record.loss) if training else record.loss
        self.log(f"{prefix}loss", loss, prog_bar=True, **options)
        self.log_dict({f"{prefix}{k}": v for k, v in metrics.items()}, **options)

    def _global_loss(self, loss: Tensor) -> Tensor:
        """The mean of the ranks' losses on steps the logger writes (a collective), else local."""
        trainer = self._trainer
        if (
            trainer is not None
            and trainer.world_size > 1
            and trainer._logger_connector.should_update_logs
        ):
            return trainer.strategy.reduce(loss.detach().clone(), reduce_op="mean")  # in place
        return loss

    def configure_callbacks(self) -> list:
        """Always on, unless configured in ``--trainer.callbacks``: save on SIGTERM, refuse
        unloadable checkpoints, non-finite weights and resumes with another loss or data."""
        present = tuple(type(callback) for callback in self.trainer.callbacks)
        defaults = [PreemptionCheckpoint(), WeightGuard(), ResumeGuard()]
        return [callback for callback in defaults if not isinstance(callback, present)]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before the weights load, a resume with another loss or data is refused."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, ResumeGuard):
                callback.check(self.trainer, self, checkpoint)

    # -------------------------------------------------------------- gradients
    def on_train_batch_start(self, batch: PreferenceBatch, batch_idx: int) -> None:
        self._batch_idx = batch_idx  # read by on_after_backward, which is not given it

    def on_after_backward(self) -> None:
        if self._is_step_boundary():
            self.grad_norm = global_grad_norm(self.policy.parameters())
            self.log("grad_norm", self.grad_norm, on_step=True, on_epoch=False)

    def _is_step_boundary(self) -> bool:
        """True on the micro-batch whose backward is followed by an optimizer step: every
        ``accumulate_grad_batches``-th batch of the epoch, and its last (as Lightning steps)."""
        done = self._batch_idx + 1  # batches of this epoch so far, this one included
        last = done >= self.trainer.num_training_batches
        return done % self.trainer.accumulate_grad_batches == 0 or last

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip by the global norm already computed in ``on_after_backward`` (one pass)."""
        if gradient_clip_val is None or gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )
        params = [p for p in self.policy.parameters() if p.grad is not None]
        if params:
            torch.nn.utils.clip_grads_with_norm_(params, gradient_clip_val, self.grad_norm)
        clipped = (self.grad_norm > gradient_clip_val).float()  # stays on the device: no sync
        counts = self._clip_counts.to(clipped.device) + torch.stack([clipped, clipped.new_ones(())])
        self._clip_counts = counts
        self.log("clip_fraction", counts[0] / counts[1], on_step=True, on_epoch=False, batch_size=1)

    # -------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = _prefer_fused(self.optimizer_factory(params), params, self.device)
        factor = self.schedule.multiplier(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_fit_start(self) -> None:
        if self.reference_mode == "precomputed" and self._reference:
            self._precompute_reference()

    def _precompute_reference(self) -> None:
        """Score the data with the frozen reference once (or load the cache), then free it.

        Runs after the model is built, sharded and restored from a checkpoint (the frozen copy
        still holds the initial weights) and before the first batch is read; loaders made
        earlier serve the values too (see :mod:`lit_align.data.reference_columns`).
        """
        identity = cache_identity(self.reference, self.policy, self.policy_config, self.trainer)
        with_tokens = self.loss.capabilities()["needs_token_logps"]
        precompute(self.reference, self.trainer.datamodule, identity, with_tokens, self.device)
        self._reference = []  # the batches carry the values now
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _prefer_fused(
    optimizer: torch.optim.Optimizer, params: list, device: torch.device
) -> torch.optim.Optimizer:
    """The same Adam/AdamW with ``fused=True`` on CUDA when neither ``fused`` nor ``foreach`` was
    chosen (one kernel per step instead of one per tensor group); anything else unchanged."""
    cls, options = type(optimizer), optimizer.defaults
    chosen = options.get("fused") is not None or options.get("foreach") is not None
    if cls not in (torch.optim.Adam, torch.optim.AdamW) or chosen or device.type != "cuda":
        return optimizer
    accepted = inspect.signature(cls.__init__).parameters
    kept = {k: v for k, v in options.items() if k in accepted and k != "fused"}
    return cls(params, **kept, fused=True)
