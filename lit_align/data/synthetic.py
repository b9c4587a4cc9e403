"""The embedded "sort" task: a preference data set whose quality a program judges exactly.

A prompt asks to sort single digits; the preferred response is the ascending list::

    prompt   = "sort: 7 3 9 1\\n"
    chosen   = "1 3 7 9"
    rejected = "3 1 7 9"     # a near miss from a small error model

Responses carry no end-of-sequence token; the data code appends ``eos`` itself.

Each prompt belongs to one split (``train``, ``validation`` or ``eval``), fixed by a hash of its
text, so splits never share a prompt whatever the seeds; one seed and split give one sample.
"""

import random
import re
import string
import zlib

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

TASK_TOKENIZER_NAME = "builtin:sort"
"""Tokenizer name that the model loader maps to :func:`build_task_tokenizer`."""

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
ALPHABET = string.digits + string.ascii_lowercase + " \n" + ":,.;-+=<>|()[]?!'\""
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] + ': ' + message['content'] | trim + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
)
SPLITS = ("train", "validation", "eval")
_SPLIT_OF_BUCKET = ("train",) * 8 + ("validation", "eval")  # 80% / 10% / 10% of all prompts
_PROMPT_RE = re.compile(r"sort: (\d(?: \d)*)\n")


def build_task_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer of the sort task (60 tokens).

    Ids: the special tokens ``<pad> <bos> <eos> <unk>`` (0-3), then one token per character of
    :data:`ALPHABET`; other characters map to ``<unk>``. ``decode(encode(s)) == s`` for every string
    over the alphabet. ``tokenizer(text)`` adds no special tokens (there is no post-processor): the
    data code adds ``eos`` itself. The chat template renders each message as ``"role: content\\n"``
    (content stripped) and the generation prompt as ``"assistant: "``; it adds no special tokens.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(ALPHABET))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()  # join characters back without inserting spaces
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def split_of(prompt: str) -> str:
    """Return the split (``train``, ``validation`` or ``eval``) that owns ``prompt``."""
    return _SPLIT_OF_BUCKET[zlib.crc32(prompt.encode()) % len(_SPLIT_OF_BUCKET)]


def make_prompts(
    num: int, seed: int, *, split: str = "eval", min_items: int = 3, max_items: int = 6
) -> list[str]:
    """Draw ``num`` task prompts of ``split``, deterministically from ``seed``.

    Args:
        num: Number of prompts.
        seed: Seed of the private ``random.Random`` that draws them.
        split: ``train``, ``validation`` or ``eval``; held-out evaluation uses ``eval``.
        min_items: Fewest digits in a prompt (at least 2).
        max_items: Most digits in a prompt.

    Returns:
        Prompts such as ``"sort: 7 3 9 1\\n"`` (possibly repeated).
    """
    _check_args(split, min_items, max_items)
    rng = random.Random(seed)
    return [_draw_prompt(rng, split, min_items, max_items) for _ in range(num)]


def make_rows(
    num_rows: int, seed: int, *, split: str = "train", min_items: int = 3, max_items: int = 6
) -> list[dict]:
    """Draw ``num_rows`` preference rows of ``split``, deterministically from ``seed``.

    The rejected response applies one error, picked by the rng, to the sorted list: two adjacent
    items swapped, an item dropped, an item duplicated, the input echoed, or descending order;
    errors that happen to give the right answer are skipped. Scores are
    ``10 * score_response(prompt, response)``, so ``score_chosen`` is always 10.0.

    Args:
        num_rows: Number of rows.
        seed, split, min_items, max_items: As in :func:`make_prompts`.

    Returns:
        Dicts with keys ``prompt``, ``chosen``, ``rejected`` (str) and ``score_chosen``,
        ``score_rejected`` (float in [0, 10]).
    """
    _check_args(split, min_items, max_items)
    rng = random.Random(seed)
    return [_make_row(_draw_prompt(rng, split, min_items, max_items), rng) for _ in range(num_rows)]


def score_response(prompt: str, response: str) -> float:
    """Judge ``response`` to a task ``prompt``, in [0, 1].

    The rule: with ``answer`` the ascending list of the prompt's ``n`` digits and ``words`` the
    ``m`` whitespace-separated words of ``response``,

    * ``1.0`` when ``response`` is exactly the answer (digits joined by single spaces, nothing
      else: no leading or trailing whitespace);
    * otherwise ``LCS(words, answer) / (max(n, m) + 1)``, where ``LCS`` is the length of the longest
      common subsequence of words and answer digits (compared as strings). The ``+ 1`` keeps every
      imperfect response, even a badly formatted correct list, below 1.

    Any response is accepted (cut generations at ``eos`` before judging: trailing text costs).

    Raises:
        ValueError: If ``prompt`` is not a sort-task prompt.
    """
    answer = [str(item) for item in sorted(_parse(prompt))]
    if response == " ".join(answer):
        return 1.0
    words = response.split()
    return _lcs(words, answer) / (max(len(words), len(answer)) + 1)


def is_correct(prompt: str, response: str) -> bool:
    """Return whether ``response`` is exactly the sorted list asked for by ``prompt``."""
    return score_response(prompt, response) == 1.0


def _check_args(split: str, min_items: int, max_items: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 2 <= min_items <= max_items:
        raise ValueError(f"need 2 <= min_items <= max_items, got {min_items=}, {max_items=}")


def _draw_prompt(rng: random.Random, split: str, min_items: int, max_items: int) -> str:
    while True:  # rejection sampling: each split owns a fixed share of all prompts
        items = [rng.randrange(10) for _ in range(rng.randint(min_items, max_items))]
        prompt = f"sort: {_format(items)}\n"
        if split_of(prompt) == split:
            return prompt


def _parse(prompt: str) -> list[int]:
    match = _PROMPT_RE.fullmatch(prompt)
    if match is None:
        raise ValueError(
            f"not a sort-task prompt: {prompt!r}; expected 'sort: ' then single digits separated"
            " by single spaces, then a newline, e.g. 'sort: 7 3 9 1\\n'"
        )
    return [int(item) for item in match.group(1).split(" ")]


def _format(items: list[int]) -> str:
    return " ".join(str(item) for item in items)


def _make_row(prompt: str, rng: random.Random) -> dict:
    items = _parse(prompt)
    chosen, rejected = _format(sorted(items)), _format(_near_miss(items, rng))
    scores = [10.0 * score_response(prompt, response) for response in (chosen, rejected)]
    row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return row | {"score_chosen": scores[0], "score_rejected": scores[1]}


def _near_miss(items: list[int], rng: random.Random) -> list[int]:
    answer = sorted(items)
    i, j = rng.randrange(len(answer) - 1), rng.randrange(len(answer))
    errors = [
        answer[:i] + [answer[i + 1], answer[i]] + answer[i + 2 :],  # two adjacent items swapped
        answer[:j] + answer[j + 1 :],  # an item dropped
        answer[: j + 1] + answer[j:],  # an item duplicated
        list(items),  # the input echoed
        answer[::-1],  # descending order
    ]
    rng.shuffle(errors)
    # dropping or duplicating changes the length, so some error always gives a wrong answer
    return next(wrong for wrong in errors if wrong != answer)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)  # prev[j]: LCS of the prefix of a seen so far and b[:j]
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]
