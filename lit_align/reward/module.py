"""RewardModule: trains a reward model on preference pairs with the Bradley-Terry loss.

Select it with ``model.class_path: lit_align.reward.RewardModule`` (``configs/reward_model.yaml``).
Everything but the model and the loss is the policy's: the same ``PolicyConfig`` (a pretrained
causal LM directory or hub id, or a new model from a config; LoRA), the same data module, formats
and validation (paired data only), optimizer and schedule, gradient clipping by the global norm,
FSDP2 sharding, checkpoints and resume, and the ``HFExport`` callback, which writes a directory
that ``AutoModelForSequenceClassification.from_pretrained`` loads (and ``lit-align score`` and
the eval's reward-model judge read).

Each step runs the ``2B`` rows of a batch (``B`` prompt+chosen, then ``B`` prompt+rejected)
through the model at once and reads one reward per row (see
:class:`~lit_align.reward.model.RewardScorer`). Logged on training steps and, with the ``val_``
prefix, per validation epoch: ``loss``, ``rewards/chosen``, ``rewards/rejected`` (means),
``rewards/margins`` (mean ``r_w − r_l``) and ``rewards/accuracies`` (fraction with
``r_w > r_l``).

Not supported: meta-device initialisation (each rank loads the pretrained weights itself; set
``--model.policy.meta_init`` to null or false) and the ``record`` that the margin and instability
monitors read (they are for policies).
"""

from __future__ import annotations

from typing import Any

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.cli import OptimizerCallable

from lit_align.distributed import shard_for_trainer
from lit_align.lora import apply_lora
from lit_align.models import PolicyConfig
from lit_align.module import DEFAULT_SCHEDULE, AlignmentModule
from lit_align.optim import LRSchedule
from lit_align.reward.loss import BradleyTerryLoss
from lit_align.reward.model import RewardScorer, build_reward_model
from lit_align.scorer import compile_blocks
from lit_align.types import LossOutput, PreferenceBatch

DEFAULT_REWARD_LOSS = lazy_instance(BradleyTerryLoss)


class RewardModule(AlignmentModule):
    """Trains a sequence-classification head (one output) on a causal LM with Bradley-Terry.

    Reuses :class:`~lit_align.module.AlignmentModule`'s tokenizer, gradient-norm, clipping and
    optimizer code; ``policy`` is a :class:`~lit_align.reward.model.RewardScorer` and there is no
    reference model.

    Args:
        policy: the model to train as a reward model (hub id, local directory, or a new model
            from a config); None builds the embedded task's tiny Llama.
        loss: the Bradley-Terry loss and its margin and centering options.
        optimizer: optimizer factory applied to the trainable parameters.
        schedule: learning-rate warm-up and decay over the run's optimizer steps.
        activation_checkpointing: recompute decoder activations in backward to save memory.
        compile: ``torch.compile`` each decoder layer (before FSDP2 sharding).
    """

    def __init__(
        self,
        policy: PolicyConfig | None = None,
        loss: BradleyTerryLoss = DEFAULT_REWARD_LOSS,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        schedule: LRSchedule = DEFAULT_SCHEDULE,
        activation_checkpointing: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(
            policy,
            loss,
            optimizer,
            schedule,
            activation_checkpointing=activation_checkpointing,
            reference="none",
            compile=compile,
        )
        if self.policy_config.meta_init:
            raise ValueError(
                "--model.policy.meta_init=true is not supported for reward models (each rank "
                "loads the pretrained weights); set it to null or false"
            )

    def configure_model(self) -> None:
        """Build the reward model (LoRA, activation checkpointing, compile as asked), then shard."""
        if self.policy is not None:
            return
        cfg = self.policy_config
        model = build_reward_model(cfg, self.tokenizer)
        model.config.use_cache = False
        if self.activation_checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        model = apply_lora(model, cfg.lora, task_type="SEQ_CLS")
        self.policy = RewardScorer(model, cfg.decoder_layers)
        self.policy.train()  # from_pretrained returns eval mode
        if self.compile_decoder:
            compile_blocks(self.policy)
        shard_for_trainer(self._trainer, self.policy)  # FSDP2Strategy only

    def forward(self, batch: PreferenceBatch) -> LossOutput:
        """Rewards of the ``2B`` rows → the loss of the ``B`` pairs."""
        rewards = self.policy(batch)  # (2B,)
        half = rewards.shape[0] // 2
        return self.loss(rewards[:half], rewards[half:], batch)

    def training_step(self, batch: PreferenceBatch, batch_idx: int) -> dict[str, Any]:
        out = self(batch)
        self._log_rewards(out, prefix="", batch_size=batch.num_examples)
        return {"loss": out.loss}

    def validation_step(self, batch: PreferenceBatch, batch_idx: int) -> None:
        self._log_rewards(self(batch), prefix="val_", batch_size=batch.num_examples)

    def _log_rewards(self, out: LossOutput, prefix: str, batch_size: int) -> None:
        chosen, rejected = out.chosen_rewards, out.rejected_rewards  # (B,) each
        metrics = {
            "rewards/chosen": chosen.mean(),
            "rewards/rejected": rejected.mean(),
            "rewards/margins": (chosen - rejected).mean(),
            "rewards/accuracies": (chosen > rejected).float().mean(),
        }
        training = prefix == ""
        options = {
            "on_step": training,
            "on_epoch": not training,
            "sync_dist": not training,  # step values stay local: no collective per step
            "batch_size": batch_size,
        }
        self.log(f"{prefix}loss", out.loss.detach(), prog_bar=True, **options)
        self.log_dict({f"{prefix}{k}": v for k, v in metrics.items()}, **options)
