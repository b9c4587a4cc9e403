"""Losses compared from one start on real preference data: gradient norms, margins, accuracy.

Each loss trains a copy of the same start (a small Llama built from a config, optionally first
fine-tuned with :class:`~lit_align.losses.SFT` on the chosen responses; the start is also the
frozen reference) on the same pairs, in the same order, at the same AdamW learning rate, and
reports its largest pre-clip gradient norm, its log-ratio margins ``Δ`` (and target ``Δr/β``
where it has one) and the held-out reward accuracy (fraction of held-out pairs with ``Δ > 0``).
``tests/losses/test_spo_real.py`` runs it small; the figures in ``docs/losses.md`` come from::

    python -m lit_align.losses.stability --data tests/data/ultrafeedback

Data: a directory with ``train.jsonl`` and ``heldout.jsonl`` in the conversational format
(``chosen`` / ``rejected`` conversations, optional ``score_chosen`` / ``score_rejected``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from lit_align.data.collate import PreferenceCollator, Truncation, special_prefix, tokenize_row
from lit_align.data.formats import DataError, RowContext, normalize_row
from lit_align.losses import DPO, SFT, SPO, PreferenceLoss
from lit_align.scorer import CausalLMScorer
from lit_align.types import PreferenceBatch


@dataclass(frozen=True)
class Setup:
    """The shared budget of a comparison.

    Attributes:
        steps: optimizer steps per loss (batches cycle).
        pairs: training pairs used (the first usable ones); 0: all.
        batch_size: pairs per step.
        lr: AdamW learning rate, the same for every loss.
        max_length: tokens per sequence (prompt + response), truncated as ``--data`` does.
        hidden_size: width of the Llama (the vocabulary is the tokenizer's).
        layers: decoder layers.
        sft_steps: SFT steps on the chosen responses before the start is frozen.
        seed: seeds the start.
    """

    steps: int = 20
    pairs: int = 8
    batch_size: int = 4
    lr: float = 1e-2
    max_length: int = 48
    hidden_size: int = 16
    layers: int = 1
    sft_steps: int = 0
    seed: int = 0


@dataclass
class History:
    """Per-step pre-clip gradient norms, mean margins ``Δ`` (nats) and targets ``Δr/β``."""

    grad_norm: list[float] = field(default_factory=list)
    margin: list[float] = field(default_factory=list)
    target: list[float] = field(default_factory=list)
    heldout_accuracy: float | None = None


def load_batches(
    path: Path, tokenizer: PreTrainedTokenizerBase, setup: Setup, pairs: int
) -> list[PreferenceBatch]:
    """The first ``pairs`` usable pairs of a jsonl file (0: all), tokenised, in batches."""
    rows, prefix = [], special_prefix(tokenizer)
    truncation = Truncation(max_length=setup.max_length)
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            try:
                row = normalize_row(
                    json.loads(line), "conversational", RowContext(str(path), "", index), tokenizer
                )
            except DataError:  # e.g. chosen == rejected: skipped, as --data.on_bad_rows skip
                continue
            rows.append(tokenize_row(row, tokenizer, truncation, prefix))
            if len(rows) == pairs:
                break
    collate, size = PreferenceCollator(tokenizer.pad_token_id), setup.batch_size
    return [collate(rows[i : i + size]) for i in range(0, len(rows), size)]


def tiny_llama(vocab_size: int, setup: Setup) -> LlamaConfig:
    """A Llama config of ``setup``'s width and depth over the tokenizer's vocabulary."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=setup.hidden_size,
        intermediate_size=2 * setup.hidden_size,
        num_hidden_layers=setup.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max(64, setup.max_length),
    )


def scorer(config: LlamaConfig, state: dict, trainable: bool) -> CausalLMScorer:
    """A :class:`CausalLMScorer` of a fresh model loaded with ``state``."""
    model = LlamaForCausalLM(config)
    model.load_state_dict(state)
    return CausalLMScorer(model).requires_grad_(trainable)


def train(
    loss: PreferenceLoss, start: dict, config: LlamaConfig, batches, setup: Setup, steps: int
) -> tuple[CausalLMScorer, CausalLMScorer, History]:
    """``steps`` AdamW steps of ``loss`` from ``start``; the policy, the reference, the history."""
    policy, reference = scorer(config, start, True), scorer(config, start, False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=setup.lr, weight_decay=0.0)
    history = History()
    for step in range(steps):
        batch = batches[step % len(batches)]
        logps = policy(batch)
        ref = reference(batch) if loss.capabilities()["requires_reference"] else None
        out = loss(logps, ref, batch)
        optimizer.zero_grad()
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        history.grad_norm.append(norm.item())
        optimizer.step()
        if ref is not None:
            history.margin.append(margins(logps, ref).mean().item())
        if out.target_margin is not None:
            history.target.append((out.target_margin / loss.beta).mean().item())
    return policy, reference, history


def margins(policy, reference) -> torch.Tensor:
    """``(B,)`` log-ratio margins ``Δ = ρ_w − ρ_l`` (nats), detached."""
    rho_w, rho_l = (policy.sum - reference.sum).detach().chunk(2)
    return rho_w - rho_l


@torch.no_grad()
def accuracy(policy: CausalLMScorer, reference: CausalLMScorer, batches) -> float:
    """Fraction of the pairs of ``batches`` with a positive log-ratio margin."""
    hits = torch.cat([margins(policy(b), reference(b)) > 0 for b in batches])
    return hits.float().mean().item()


def compare(
    losses: dict[str, PreferenceLoss], tokenizer, data: Path, setup: Setup, heldout: bool = True
) -> dict[str, History]:
    """Train every loss of ``losses`` from one start (see the module docstring); ``heldout``:
    also score ``heldout.jsonl``."""
    torch.manual_seed(setup.seed)
    train_batches = load_batches(data / "train.jsonl", tokenizer, setup, setup.pairs)
    config = tiny_llama(len(tokenizer), setup)
    start = LlamaForCausalLM(config).state_dict()
    if setup.sft_steps:
        sft, _, _ = train(SFT(), start, config, train_batches, setup, setup.sft_steps)
        start = sft.model.state_dict()
    heldout = heldout and (data / "heldout.jsonl").exists()
    held = load_batches(data / "heldout.jsonl", tokenizer, setup, 0) if heldout else []
    results = {}
    for name, loss in losses.items():
        policy, reference, history = train(loss, start, config, train_batches, setup, setup.steps)
        history.heldout_accuracy = accuracy(policy, reference, held) if held else None
        results[name] = history
    return results


def main(argv: list[str] | None = None) -> None:
    """Print DPO against SPO at one β and learning rate (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tokenizer", default=None, help="default: SmolLM2-135M-Instruct's")
    parser.add_argument("--beta", type=float, default=0.1)
    for name, value in vars(
        Setup(
            steps=60,
            pairs=0,
            batch_size=8,
            lr=3e-3,
            max_length=96,
            hidden_size=32,
            layers=2,
            sft_steps=30,
        )
    ).items():
        parser.add_argument(f"--{name}", type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    data, beta, tokenizer = args.pop("data"), args.pop("beta"), args.pop("tokenizer")
    from transformers import AutoTokenizer

    from lit_align.real_model import materialise

    tokenizer = AutoTokenizer.from_pretrained(tokenizer or materialise())
    results = compare(
        {"DPO": DPO(beta=beta), "SPO": SPO(beta=beta)}, tokenizer, data, Setup(**args)
    )
    for name, h in results.items():
        target = f", target Δr/β {sum(h.target) / len(h.target):.1f}" if h.target else ""
        print(
            f"{name} β={beta}: max grad norm {max(h.grad_norm):.3g}, final margin "
            f"{h.margin[-1]:.1f} nats (max {max(h.margin):.1f}){target}, held-out accuracy "
            f"{h.heldout_accuracy}"
        )


if __name__ == "__main__":
    main()
