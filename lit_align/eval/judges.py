"""Judges that compare two responses per prompt.

Every judge answers :meth:`Judge.compare` with one outcome per prompt for response A: ``1.0``
(A better), ``0.0`` (B better) or ``0.5`` (tie), ready for :func:`lit_align.eval.win_rate`.

* :class:`RuleJudge` — exact programmatic scores of the built-in sort task.
* :class:`RewardModelJudge` — a scalar reward model (``AutoModelForSequenceClassification``).
* :class:`PairwiseLLMJudge` — a causal LM asked "A or B?", with both orders averaged.

A prompt is a plain string (one user turn) or a conversation (``[{"role", "content"}, ...]``).
Model judges render what they read with their OWN tokenizer's chat template: the reward model
scores the conversation plus the response as it was trained to read it, and the LLM judge
reads its instruction as a user turn followed by the assistant header. A tokenizer without a
template gets plain text (prompt followed by response; the instruction ending in "Answer:").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lit_align.eval.generate import encode_left_padded

Message = dict[str, str]
Prompt = str | list[Message]
"""A prompt: plain text (one user turn) or a conversation ending before the answer."""

PAIRWISE_TEMPLATE = (
    "[Question]\n{prompt}\n\n"
    "[Response A]\n{response_a}\n\n"
    "[Response B]\n{response_b}\n\n"
    "Which response is better? Answer A or B."
)
"""Instruction of :class:`PairwiseLLMJudge`; the next token after it (rendered as a user turn
and the assistant header, or followed by ``"\nAnswer:"`` without a chat template) is read as the
verdict."""


def as_messages(prompt: Prompt) -> list[Message]:
    """The prompt as a conversation: a string becomes one user turn."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def as_text(prompt: Prompt) -> str:
    """The prompt as plain text: a single user turn is its content, longer ones ``role: text``."""
    messages = as_messages(prompt)
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def has_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer renders conversations itself."""
    return getattr(tokenizer, "chat_template", None) is not None


def render_exchange(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str) -> str:
    """The prompt answered by ``response``, as ``tokenizer``'s chat template renders the whole
    conversation (plain ``prompt + response`` without a template)."""
    if not has_chat_template(tokenizer):
        return as_text(prompt) + response
    messages = [*as_messages(prompt), {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


class Judge(ABC):
    """Compares responses A and B to the same prompts."""

    def compare(
        self, prompts: Sequence[Prompt], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        """Judge A against B for each prompt.

        Args:
            prompts: The prompts (plain text or conversations).
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
        self, prompts: Sequence[Prompt], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        """Judge equal-length inputs (see :meth:`compare`)."""


def _check_lengths(
    prompts: Sequence[Prompt], responses_a: list[str], responses_b: list[str]
) -> None:
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError(
            "prompts, responses_a and responses_b must have equal lengths, got "
            f"{len(prompts)}, {len(responses_a)} and {len(responses_b)}"
        )


class ScoringJudge(Judge):
    """A judge that scores each response on its own; the higher score wins, equal scores tie."""

    @abstractmethod
    def score(self, prompts: Sequence[Prompt], responses: list[str]) -> list[float]:
        """Score each ``(prompt, response)``; higher is better."""

    def _compare(
        self, prompts: Sequence[Prompt], responses_a: list[str], responses_b: list[str]
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

    def score(self, prompts: Sequence[Prompt], responses: list[str]) -> list[float]:
        """Score each response with the task's rule (raises ValueError on non-task prompts)."""
        from lit_align.data.synthetic import score_response  # lazy: eval must not need data

        return [score_response(as_text(p), r) for p, r in zip(prompts, responses, strict=True)]


class RewardModelJudge(ScoringJudge):
    """Judge by a scalar reward model: the response whose exchange scores higher wins.

    Each ``(prompt, response)`` is rendered with the reward model's own chat template (see
    :func:`render_exchange`; plain ``prompt + response`` without one) and tokenised with its
    special prefix, as in training. Any ``AutoModelForSequenceClassification`` directory with
    ``num_labels == 1`` works (a hub reward model or one exported by lit_align); its single logit
    is the reward (classifiers with several labels are rejected rather than guessing which label
    means "good"). Texts are left-padded; HF's sequence-classification heads pool the last token
    that is not the pad id, so ``model.config.pad_token_id`` must equal the tokenizer's pad id
    (a model loaded from a path without one is given the tokenizer's).

    Args:
        model_path_or_model: A loaded model, or a local directory / hub id passed to
            ``AutoModelForSequenceClassification.from_pretrained``.
        tokenizer: The model's tokenizer; loaded from ``model_path_or_model`` when None (a path
            is then required). Without a pad token, eos pads.
        batch_size: Texts per forward pass.
        trust_remote_code: Allow custom model code when loading from a path.
        device: Device of a model loaded from a path.
        dtype: Dtype of a model loaded from a path (default: as saved).
        max_length: most tokens of a rendered exchange; a longer one keeps its end (see
            :func:`~lit_align.eval.generate.encode_left_padded`). None: the model's
            ``max_position_embeddings`` when its config has one, else no limit.

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
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        max_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model = model_path_or_model
        if isinstance(model, str):
            model, tokenizer = _load_reward_model(model, tokenizer, trust_remote_code, dtype)
            model.to(device)
        if tokenizer is None:
            raise ValueError("tokenizer is required when model_path_or_model is a loaded model")
        _check_reward_model(model, tokenizer)
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.max_length = max_length or getattr(model.config, "max_position_embeddings", None)

    @torch.inference_mode()
    def score(self, prompts: Sequence[Prompt], responses: list[str]) -> list[float]:
        """Return the reward of each rendered exchange."""
        texts = [
            render_exchange(self.tokenizer, p, r) for p, r in zip(prompts, responses, strict=True)
        ]
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            enc = encode_left_padded(self.tokenizer, batch, self.model.device, self.max_length)
            logits = self.model(**enc).logits  # (B, 1); enc: (B, T)
            scores.extend(logits[:, 0].float().tolist())
        return scores


def _load_reward_model(
    path: str,
    tokenizer: PreTrainedTokenizerBase | None,
    trust_remote_code: bool,
    dtype: torch.dtype | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    kwargs = {"trust_remote_code": trust_remote_code}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, **kwargs, **({"dtype": dtype} if dtype else {})
    )
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


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

    For each pair the model reads the instruction :data:`PAIRWISE_TEMPLATE` (or ``template``),
    rendered as a user turn with the judge's chat template and the assistant header after it
    (without a template: the plain instruction and ``"\nAnswer:"``), twice, with ``(a, b)``
    and with ``(b, a)`` in the A/B slots. From the next-token logits,
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

    def render(self, prompt: Prompt, response_a: str, response_b: str) -> str:
        """The text the judge reads for one ordered pair; its next token is the verdict."""
        instruction = self.template.format(
            prompt=as_text(prompt), response_a=response_a, response_b=response_b
        )
        if not has_chat_template(self.tokenizer):
            return instruction + "\nAnswer:"
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
        )

    def preference(
        self, prompts: Sequence[Prompt], responses_a: list[str], responses_b: list[str]
    ) -> list[float]:
        """Return the position-averaged probability that A beats B, per prompt, in [0, 1].

        Raises:
            ValueError: If the three lists differ in length.
        """
        _check_lengths(prompts, responses_a, responses_b)
        n = len(prompts)
        texts = [
            self.render(p, x, y)
            for p, x, y in zip(
                list(prompts) * 2, responses_a + responses_b, responses_b + responses_a
            )
        ]  # 2n judge prompts: the n pairs as given, then the n pairs swapped
        p_first = torch.cat(
            [
                self._prob_first(texts[start : start + self.batch_size])
                for start in range(0, len(texts), self.batch_size)
            ]
        )  # (2n,) P(the response in slot A is better)
        return ((p_first[:n] + 1 - p_first[n:]) / 2).tolist()

    def _compare(
        self, prompts: Sequence[Prompt], responses_a: list[str], responses_b: list[str]
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
        enc = encode_left_padded(self.tokenizer, texts, self.model.device)
        out = self.model.generate(
            **enc,
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
