"""Judges that compare two responses per prompt.

Every judge answers :meth:`Judge.compare` with one outcome per prompt for response A: ``1.0``
(A better), ``0.0`` (B better) or ``0.5`` (tie), ready for :func:`lit_align.eval.win_rate`.

* :class:`RuleJudge` — exact programmatic scores of the built-in sort task.
* :class:`RewardModelJudge` — a scalar reward model (``AutoModelForSequenceClassification``).
* :class:`PairwiseLLMJudge` — a causal LM asked "A or B?", with both orders averaged.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_align.eval.generate import padding_side

PAIRWISE_TEMPLATE = (
    "[Question]\n{prompt}\n\n"
    "[Response A]\n{response_a}\n\n"
    "[Response B]\n{response_b}\n\n"
    "Which response is better? Answer A or B.\n"
    "Answer:"
)
"""Judge prompt of :class:`PairwiseLLMJudge`; the next token after it is read as the verdict."""


class Judge(ABC):
    """Compares responses A and B to the same prompts."""

    def compare(
        self, prompts: list[str], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        """Judge A against B for each prompt.

        Args:
            prompts: Rendered prompts.
            responses_a: Response A to each prompt.
            responses_b: Response B to each prompt.

        Returns:
            Per prompt: 1.0 if A is better, 0.0 if B is better, 0.5 for a tie.

        Raises:
            ValueError: If the three lists differ in length.
        """
        _check_lengths(prompts, responses_a, responses_b)
        return self._compare(prompts, responses_a, responses_b)

    @abstractmethod
    def _compare(
        self, prompts: list[str], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        """Judge equal-length inputs (see :meth:`compare`)."""


def _check_lengths(prompts: list[str], responses_a: list[str], responses_b: list[str]) -> None:
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError(
            "prompts, responses_a and responses_b must have equal lengths, got "
            f"{len(prompts)}, {len(responses_a)} and {len(responses_b)}"
        )


class ScoringJudge(Judge):
    """A judge that scores each response on its own; the higher score wins, equal scores tie."""

    @abstractmethod
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Score each ``(prompt, response)``; higher is better."""

    def _compare(
        self, prompts: list[str], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        scores_a, scores_b = self.score(prompts, responses_a), self.score(prompts, responses_b)
        return [_outcome(a, b) for a, b in zip(scores_a, scores_b)]


def _outcome(score_a: float, score_b: float, margin: float = 0.0) -> float:
    """1.0 if score_a beats score_b by more than margin, 0.0 if the reverse, else 0.5 (tie)."""
    if score_a > score_b + margin:
        return 1.0
    return 0.0 if score_a < score_b - margin else 0.5


class RuleJudge(ScoringJudge):
    """Programmatic judge of the built-in sort task (``lit_align.data.synthetic``).

    Scores are ``score_response(prompt, response)`` in [0, 1], 1.0 meaning exactly correct;
    responses are judged as given (cut them at eos first).
    """

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Score each response with the task's rule (raises ValueError on non-task prompts)."""
        from lit_align.data.synthetic import score_response  # lazy: eval must not need data

        return [score_response(p, r) for p, r in zip(prompts, responses, strict=True)]


class RewardModelJudge(ScoringJudge):
    """Judge by a scalar reward model: the response whose ``prompt + response`` scores higher wins.

    The model must have ``num_labels == 1``; its single logit is the reward (classifiers with
    several labels are rejected rather than guessing which label means "good"). Texts are
    right-padded; HF's sequence-classification heads pool the last token that is not the pad id,
    so ``model.config.pad_token_id`` must equal the tokenizer's pad id.

    Args:
        model_path_or_model: A loaded model, or a local directory / hub id passed to
            ``AutoModelForSequenceClassification.from_pretrained`` (loaded on CPU in its saved
            dtype; load it yourself for another device or dtype).
        tokenizer: The model's tokenizer; loaded from ``model_path_or_model`` when None (a path
            is then required).
        batch_size: Texts per forward pass.
        trust_remote_code: Allow custom model code when loading from a path.
        add_special_tokens: Let the tokenizer add its special tokens (e.g. bos) to each text.
            False by default: prompts are already rendered.

    Raises:
        ValueError: On ``num_labels != 1``, a missing or mismatched pad token, or no tokenizer
            for a loaded model.
    """

    def __init__(
        self,
        model_path_or_model: str | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 16,
        trust_remote_code: bool = False,
        add_special_tokens: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model = model_path_or_model
        if isinstance(model, str):
            path, kwargs = model, {"trust_remote_code": trust_remote_code}
            model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, **kwargs)
        if tokenizer is None:
            raise ValueError("tokenizer is required when model_path_or_model is a loaded model")
        _check_reward_model(model, tokenizer)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.add_special_tokens = batch_size, add_special_tokens

    @torch.inference_mode()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Return the reward of each ``prompt + response`` text."""
        texts = [p + r for p, r in zip(prompts, responses, strict=True)]
        scores: list[float] = []
        with padding_side(self.tokenizer, "left"):
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=self.add_special_tokens,
                ).to(self.model.device)  # (B, T)
                logits = self.model(**enc).logits  # (B, 1)
                scores.extend(logits[:, 0].float().tolist())
        return scores


def _check_reward_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    if model.config.num_labels != 1:
        raise ValueError(
            f"reward model must have num_labels == 1 (one scalar reward), got "
            f"{model.config.num_labels}"
        )
    if tokenizer.pad_token_id is None or model.config.pad_token_id != tokenizer.pad_token_id:
        raise ValueError(
            f"model.config.pad_token_id ({model.config.pad_token_id}) must equal the tokenizer's "
            f"pad_token_id ({tokenizer.pad_token_id}); set tokenizer.pad_token and "
            "model.config.pad_token_id = tokenizer.pad_token_id"
        )


class PairwiseLLMJudge(Judge):
    """Judge by asking a causal LM which response is better, in both orders.

    For each pair the model reads :data:`PAIRWISE_TEMPLATE` (or ``template``) twice, with
    ``(a, b)`` and with ``(b, a)`` in the A/B slots. From the next-token logits,
    ``p = P(A) / (P(A) + P(B))`` where ``P(A)`` sums the probabilities of the single-token
    spellings of ``" A"`` and ``"A"`` (whichever of them the tokenizer has as one token; same
    for B). The preference for ``a`` is ``(p_ab + (1 - p_ba)) / 2``: a pure position bias adds
    the same amount to both ``p`` and cancels to 0.5. The outcome is 1.0 above
    ``0.5 + tie_margin``, 0.0 below ``0.5 - tie_margin`` and 0.5 (tie) in between, so
    rounding and weak, order-dependent preferences count as ties.

    Args:
        model: A causal LM (``AutoModelForCausalLM``); kept in eval mode.
        tokenizer: Its tokenizer; it needs a pad token.
        batch_size: Judge prompts per forward pass (each pair makes two).
        template: Format string with ``{prompt}``, ``{response_a}`` and ``{response_b}``.
        tie_margin: Half-width of the tie band around 0.5, in [0, 0.5).

    Raises:
        ValueError: If A or B has no single-token spelling, they share a token, or an argument
            is out of range.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 8,
        template: str = PAIRWISE_TEMPLATE,
        tie_margin: float = 0.05,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= tie_margin < 0.5:
            raise ValueError(f"tie_margin must be in [0, 0.5), got {tie_margin}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.template, self.tie_margin = batch_size, template, tie_margin
        self.ids_a, self.ids_b = _answer_ids(tokenizer, "A"), _answer_ids(tokenizer, "B")
        if set(self.ids_a) & set(self.ids_b):
            raise ValueError(f"answers A and B share token ids {self.ids_a} / {self.ids_b}")

    def preference(
        self, prompts: list[str], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        """Return the position-averaged probability that A beats B, per prompt, in [0, 1].

        Raises:
            ValueError: If the three lists differ in length.
        """
        _check_lengths(prompts, responses_a, responses_b)
        n = len(prompts)
        texts = [
            self.template.format(prompt=p, response_a=x, response_b=y)
            for p, x, y in zip(prompts * 2, responses_a + responses_b, responses_b + responses_a)
        ]  # 2n judge prompts: the n pairs as given, then the n pairs swapped
        p_first = torch.cat(
            [
                self._prob_first(texts[start : start + self.batch_size])
                for start in range(0, len(texts), self.batch_size)
            ]
        )  # (2n,) P(the response in slot A is better)
        return ((p_first[:n] + 1 - p_first[n:]) / 2).tolist()

    def _compare(
        self, prompts: list[str], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        prefs = self.preference(prompts, responses_a, responses_b)
        return [_outcome(p, 0.5, self.tie_margin) for p in prefs]

    @torch.inference_mode()
    def _prob_first(self, texts: list[str]) -> Tensor:
        """``P(A) / (P(A) + P(B))`` for the next token after each text; shape ``(B,)``."""
        logits = self._next_token_logits(texts).float()  # (B, V)
        logp = logits.log_softmax(-1)
        logp_a = logp[:, self.ids_a].logsumexp(-1)  # (B,)
        logp_b = logp[:, self.ids_b].logsumexp(-1)  # (B,)
        return torch.sigmoid(logp_a - logp_b)

    def _next_token_logits(self, texts: list[str]) -> Tensor:
        """Logits of the token after each text, ``(B, V)``, via one step of ``generate``.

        ``generate`` handles left padding (position ids from the attention mask) per architecture
        and computes logits for the last position only.
        """
        with padding_side(self.tokenizer, "left"):
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = self.model.generate(
            **enc.to(self.model.device),
            max_new_tokens=1,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
        return out.logits[0]  # (B, V), raw logits before any logits processor


def _answer_ids(tokenizer: PreTrainedTokenizerBase, letter: str) -> list[int]:
    """Ids of the single-token spellings of ``" " + letter`` and ``letter``."""
    encodings = [tokenizer.encode(s, add_special_tokens=False) for s in (" " + letter, letter)]
    unk = tokenizer.unk_token_id
    ids = sorted({ids[0] for ids in encodings if len(ids) == 1 and ids[0] != unk})
    if not ids:
        raise ValueError(
            f"the judge tokenizer has no single token for {letter!r} or {' ' + letter!r} "
            f"(got {encodings}); use a tokenizer that has one"
        )
    return ids
