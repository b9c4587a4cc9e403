"""Builders of the (policy, reference, batch) triples the loss tests feed to losses."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_align.types import PreferenceBatch, SequenceLogps


def mask_from_lengths(lengths: Tensor, width: int | None = None) -> Tensor:
    """``(N, T)`` bool mask with the first ``lengths[i]`` positions of row ``i`` set."""
    width = int(lengths.max()) if width is None else width
    return torch.arange(width)[None, :] < lengths[:, None]


def make_batch(
    mask: Tensor,
    labels: Tensor | None = None,
    scores: tuple[Tensor, Tensor] | None = None,
    input_ids: Tensor | None = None,
) -> PreferenceBatch:
    """A batch whose rows all differ (unless ``input_ids`` is given) with response mask ``mask``."""
    n, t = mask.shape
    ids = torch.arange(n * t).view(n, t) if input_ids is None else input_ids
    score_chosen, score_rejected = (None, None) if scores is None else scores
    return PreferenceBatch(
        input_ids=ids,
        attention_mask=torch.ones(n, t, dtype=torch.long),
        response_mask=mask.bool(),
        labels=labels,
        score_chosen=score_chosen,
        score_rejected=score_rejected,
    )


def from_tokens(
    policy_tokens: Tensor,
    reference_tokens: Tensor,
    mask: Tensor,
    entropy: Tensor | None = None,
    **batch_kwargs,
) -> tuple[SequenceLogps, SequenceLogps, PreferenceBatch]:
    """Inputs from ``(N, T)`` per-token log-probs; positions outside ``mask`` are zeroed."""
    mask = mask.bool()

    def seq(tokens: Tensor, ent: Tensor | None) -> SequenceLogps:
        tokens = torch.where(mask, tokens, 0)
        ent = None if ent is None else torch.where(mask, ent, 0)
        return SequenceLogps(tokens.sum(-1), mask.sum(-1).to(tokens.dtype), tokens, ent)

    zero_entropy = None if entropy is None else torch.zeros_like(entropy)
    policy = seq(policy_tokens, entropy)
    reference = seq(reference_tokens, zero_entropy)
    return policy, reference, make_batch(mask, **batch_kwargs)


def from_sums(
    policy_sums: Tensor,
    reference_sums: Tensor | None = None,
    lengths: Tensor | None = None,
    **batch_kwargs,
) -> tuple[SequenceLogps, SequenceLogps, PreferenceBatch]:
    """Inputs from ``(N,)`` sequence log-probs (no per-token values); lengths default to 4."""
    if reference_sums is None:
        reference_sums = torch.zeros_like(policy_sums)
    if lengths is None:
        lengths = torch.full(policy_sums.shape, 4)
    count = lengths.to(policy_sums.dtype)
    policy = SequenceLogps(policy_sums, count)
    reference = SequenceLogps(reference_sums, count)
    return policy, reference, make_batch(mask_from_lengths(lengths), **batch_kwargs)


def pair(
    c, r, c_ref=0.0, r_ref=0.0, **kwargs
) -> tuple[SequenceLogps, SequenceLogps, PreferenceBatch]:
    """Paired inputs from per-pair chosen/rejected sums (floats or ``(B,)`` tensors, broadcast)."""
    values = [torch.as_tensor(v, dtype=torch.float64) for v in (c, r, c_ref, r_ref)]
    c, r, c_ref, r_ref = (v.reshape(-1) for v in torch.broadcast_tensors(*values))
    return from_sums(torch.cat([c, r]), torch.cat([c_ref, r_ref]), **kwargs)


def random_tokens(
    num_rows: int, width: int = 5, seed: int = 0, dtype: torch.dtype = torch.float64, scale=1.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random ``(N, T)`` policy token log-probs (a leaf with grad), reference, entropy and mask.

    Row lengths vary between 2 and ``width``; entropies are valid for the drawn log-probs.
    """
    g = torch.Generator().manual_seed(seed)
    policy = (-scale * torch.rand(num_rows, width, generator=g, dtype=dtype) * 3).requires_grad_()
    reference = -scale * torch.rand(num_rows, width, generator=g, dtype=dtype) * 3
    p = policy.detach().exp()
    # entropy of (P, rest spread over two tokens): −P log P − (1 − P) log((1 − P)/2)
    entropy = -p * policy.detach() - torch.xlogy(1 - p, (1 - p) / 2)
    lengths = torch.randint(2, width + 1, (num_rows,), generator=g)
    return policy, reference, entropy, mask_from_lengths(lengths, width)


def layout_of(loss) -> str:
    """``"kl"`` (KTO's examples + mismatched rows), ``"paired"`` or ``"unpaired"``."""
    if loss.capabilities()["needs_kl_rows"]:
        return "kl"
    return "paired" if loss.capabilities()["supports_paired"] else "unpaired"


class Case:
    """Random token-level inputs for ``num_examples`` examples in the layout a loss needs.

    ``inputs(examples)`` builds (policy, reference, batch) for a subset of the examples from the
    same leaf tensor ``self.policy``, so micro-batches accumulate gradients into one ``.grad``.
    KTO's mismatched rows get reference log-probs 0 (so ρ < 0 there and the KL estimate is 0).
    """

    def __init__(self, layout, num_examples=4, width=4, seed=0, dtype=torch.float64, scale=1.0):
        rows = num_examples if layout == "unpaired" else 2 * num_examples
        self.layout, self.num_examples = layout, num_examples
        self.policy, self.reference, self.entropy, self.mask = random_tokens(
            rows, width, seed, dtype, scale
        )
        if layout == "kl":
            self.reference[num_examples:] = 0.0
        self.labels = None if layout == "paired" else torch.arange(num_examples) % 2 == 0
        g = torch.Generator().manual_seed(seed + 1)
        gaps = torch.rand(num_examples, generator=g, dtype=dtype) * 2 + 0.5
        self.scores = (gaps, torch.zeros_like(gaps)) if layout == "paired" else None

    def inputs(self, examples=slice(None), policy=None):
        """Inputs for ``examples`` (a slice over examples); ``policy`` replaces the leaf."""
        policy = self.policy if policy is None else policy
        idx = torch.arange(self.num_examples)[examples]
        rows = idx if self.layout == "unpaired" else torch.cat([idx, idx + self.num_examples])
        labels = None if self.labels is None else self.labels[idx]
        scores = None if self.scores is None else tuple(s[idx] for s in self.scores)
        return from_tokens(
            policy[rows],
            self.reference[rows],
            self.mask[rows],
            entropy=self.entropy[rows],
            labels=labels,
            scores=scores,
        )
