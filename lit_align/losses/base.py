"""The preference-loss strategy interface.

A loss is an ``nn.Module`` (so stateful losses such as BCO's running reward baseline are saved
in checkpoints) that maps policy and reference log-probs to a :class:`~lit_align.types.LossOutput`.
It declares what it needs through capability flags (class defaults, which an instance may
override); the module, the reference, the data module and the docs table read them through
:meth:`PreferenceLoss.capabilities` and never branch on the loss class.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from lit_align.types import LossOutput, PreferenceBatch, SequenceLogps


class LossConfigError(ValueError):
    """A loss hyper-parameter is out of range; the message names the flag to change."""


def require(condition: bool, flag: str, message: str) -> None:
    """Raise :class:`LossConfigError` naming ``--model.loss.<flag>`` unless ``condition`` holds.

    Example: ``require(beta > 0, "beta", f"must be > 0, got {beta}")`` raises
    ``--model.loss.beta must be > 0, got -1``.
    """
    if not condition:
        raise LossConfigError(f"--model.loss.{flag} {message}")


CAPABILITIES = (
    "requires_reference",
    "needs_token_logps",
    "needs_token_entropy",
    "supports_paired",
    "supports_unpaired",
    "optimizes_margin",
    "needs_rejected",
    "needs_kl_rows",
)
"""The names of the capability flags (:class:`Capabilities`) every loss declares."""


class Capabilities:
    """The capability flags the training module reads of a loss, with their defaults.

    Shared by :class:`PreferenceLoss` and the reward model's ``BradleyTerryLoss``. Class
    attributes, which an instance may override (a ``MarginLoss`` modifier, a ``WeightedSum`` of
    components); everything reads them through :meth:`capabilities`:

    Attributes:
        requires_reference: the loss needs reference log-probs; when False no reference model is
            built or run.
        needs_token_logps: the loss reads ``SequenceLogps.token_logps`` (per-token values).
        needs_token_entropy: the loss reads ``SequenceLogps.token_entropy``.
        supports_paired: accepts paired batches (chosen rows first, then rejected).
        supports_unpaired: accepts unpaired batches with boolean ``labels``.
        optimizes_margin: the objective acts on the chosen-rejected reward margin, so margin
            monitors (``margin_divergence``) mean something; False for SFT.
        needs_rejected: reads the rejected rows of paired batches; when False the module scores
            only the chosen rows and hands the loss an unpaired batch of them, all desirable
            (SFT: half the compute).
        needs_kl_rows: unpaired batches carry KTO's mismatched KL rows (the data module adds
            them unless ``--data.kl_rows`` says otherwise).
    """

    requires_reference: ClassVar[bool] = True
    needs_token_logps: ClassVar[bool] = False
    needs_token_entropy: ClassVar[bool] = False
    supports_paired: ClassVar[bool] = True
    supports_unpaired: ClassVar[bool] = False
    optimizes_margin: ClassVar[bool] = True
    needs_rejected: ClassVar[bool] = True
    needs_kl_rows: ClassVar[bool] = False

    def capabilities(self) -> dict[str, bool]:
        """This loss's capability flags (:data:`CAPABILITIES`), as this instance sets them."""
        return {name: bool(getattr(self, name)) for name in CAPABILITIES}


class PreferenceLoss(Capabilities, nn.Module):
    """Base class of every loss; subclasses are selectable by ``class_path`` from YAML or CLI.

    Capabilities: see :class:`Capabilities`.

    Metrics (read by :func:`lit_align.records.make_record`):
        reward_beta: β of the standard rewards ``β·ρ`` logged as ``rewards/*`` (summed
            log-ratios, or summed log-probs without a reference, as TRL logs them).
        reward_namespace: where the loss's own rewards (``LossOutput.chosen_rewards`` and
            ``rejected_rewards``) are logged when their scale differs from the standard one
            (``<namespace>/rewards/*``); None when they are the standard rewards.

    Documentation (class attributes, rendered into ``docs/losses.md`` by
    :mod:`lit_align.docs`):
        formula: the per-example loss on one line, in the notation of that page
            (e.g. ``−logσ(βΔ)``).
        paper: short citation with the arXiv id (e.g. ``Rafailov et al. 2023, arXiv 2305.18290``).
    """

    own_reward_scale: ClassVar[str | None] = None
    formula: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def forward(
        self,
        policy: SequenceLogps,
        reference: SequenceLogps | None,
        batch: PreferenceBatch,
    ) -> LossOutput:
        """Compute the loss.

        Args:
            policy: log-probs of the ``N`` rows under the policy (with gradient).
            reference: the same under the frozen reference (no gradient); None when
                ``requires_reference`` is False.
            batch: the batch, for labels, scores and masks.
        """
        raise NotImplementedError

    @property
    def reward_beta(self) -> float:
        """The loss's ``beta`` (1.0 for losses without one)."""
        return float(getattr(self, "beta", 1.0))

    @property
    def reward_namespace(self) -> str | None:
        """``own_reward_scale``: the namespace of the loss's own rewards, or None."""
        return self.own_reward_scale

