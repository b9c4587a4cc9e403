"""Tests of the embedded sort task: rows, splits, judge and tokenizer."""

import pytest
from transformers import AutoTokenizer

from lit_align.data.synthetic import (
    ALPHABET,
    SPECIAL_TOKENS,
    SPLITS,
    build_task_tokenizer,
    is_correct,
    make_prompts,
    make_rows,
    score_response,
    split_of,
)

PROMPT = "sort: 7 3 9 1\n"


@pytest.fixture(scope="module")
def tokenizer():
    return build_task_tokenizer()


def test_rows_are_deterministic_in_the_seed():
    assert make_rows(50, seed=0) == make_rows(50, seed=0)
    assert make_rows(50, seed=0) != make_rows(50, seed=1)
    assert make_prompts(50, seed=0) == make_prompts(50, seed=0)
    assert make_prompts(50, seed=0) != make_prompts(50, seed=1)


def test_row_format():
    for row in make_rows(200, seed=0, min_items=3, max_items=6):
        assert set(row) == {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"}
        assert row["prompt"].startswith("sort: ") and row["prompt"].endswith("\n")
        items = row["prompt"][len("sort: ") : -1].split(" ")
        assert 3 <= len(items) <= 6
        assert row["chosen"] == " ".join(sorted(items))


@pytest.mark.parametrize(("min_items", "max_items"), [(2, 2), (3, 6)])
def test_chosen_is_correct_and_rejected_is_not(min_items, max_items):
    """(2, 2) draws many pairs like "4 4", where swap, echo and descending give the answer."""
    for row in make_rows(1000, seed=3, min_items=min_items, max_items=max_items):
        assert row["rejected"] != row["chosen"]
        assert is_correct(row["prompt"], row["chosen"]) and row["score_chosen"] == 10.0
        assert not is_correct(row["prompt"], row["rejected"])
        assert 0.0 <= row["score_rejected"] < 10.0
        assert row["score_rejected"] == 10.0 * score_response(row["prompt"], row["rejected"])


def test_splits_are_disjoint_whatever_the_seed():
    prompts = {split: set(make_prompts(500, seed=0, split=split)) for split in SPLITS}
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["train"] & prompts["eval"]
    assert not prompts["validation"] & prompts["eval"]
    assert all(
        split_of(row["prompt"]) == "validation" for row in make_rows(50, 0, split="validation")
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("1 3 7 9", 1.0),
        ("1 3 7 9\n", 4 / 5),
        (" 1  3 7 9", 4 / 5),
        ("3 1 7 9", 3 / 5),
        ("1 3 9", 3 / 5),
        ("1 3 3 7 9", 4 / 6),
        ("7 3 9 1", 2 / 5),
        ("9 7 3 1", 1 / 5),
        ("1 3 7 9 <eos> x", 4 / 7),
        ("1,3,7,9", 0.0),
        ("", 0.0),
    ],
)
def test_judge_by_hand(response, expected):
    """Prompt "sort: 7 3 9 1", answer "1 3 7 9" (n = 4); score = LCS / (max(n, m) + 1) unless exact.

    - exact answer: 1.0
    - right words, trailing newline or extra spaces: LCS 4 / (4 + 1) = 0.8
    - swapped pair "3 1 7 9": LCS 3 ("3 7 9") / 5 = 0.6
    - dropped item "1 3 9": LCS 3 / (max(4, 3) + 1) = 0.6
    - duplicated item "1 3 3 7 9": LCS 4 / (5 + 1) = 2/3
    - echoed input "7 3 9 1": LCS 2 ("3 9") / 5 = 0.4
    - descending "9 7 3 1": LCS 1 / 5 = 0.2
    - trailing text "1 3 7 9 <eos> x": 6 words, LCS 4 / 7
    - "1,3,7,9" is one word matching nothing: 0; empty response: 0 / 5 = 0
    """
    assert score_response(PROMPT, response) == pytest.approx(expected)
    assert is_correct(PROMPT, response) == (expected == 1.0)


@pytest.mark.parametrize(
    "response", ["\x00\x01", "ünïcødé 1 3", "1 3 7 9 " * 500, "\n\n\n", "-1 3 7 9", "01 3 7 9"]
)
def test_judge_survives_garbage(response):
    assert 0.0 <= score_response(PROMPT, response) < 1.0


@pytest.mark.parametrize(
    "prompt", ["", "sort: 7 3 9 1", "sort: 10 3\n", "user: sort: 1 2\n", "sort:  1 2\n"]
)
def test_judge_rejects_non_task_prompts(prompt):
    with pytest.raises(ValueError, match="not a sort-task prompt"):
        score_response(prompt, "1 2")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split must be one of .* got 'test'"):
        make_rows(1, 0, split="test")
    with pytest.raises(ValueError, match="min_items=4, max_items=3"):
        make_prompts(1, 0, min_items=4, max_items=3)


def test_tokenizer_vocabulary(tokenizer):
    assert len(tokenizer) == len(SPECIAL_TOKENS) + len(ALPHABET) == 60
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_token, tokenizer.bos_token) == ("<pad>", "<bos>")
    assert (tokenizer.eos_token, tokenizer.unk_token) == ("<eos>", "<unk>")
    assert tokenizer("AB")["input_ids"] == [tokenizer.unk_token_id] * 2


def test_tokenizer_round_trips_one_token_per_character(tokenizer):
    texts = [ALPHABET, "  a\n\nb  "] + [
        row[key] for row in make_rows(100, seed=0) for key in ("prompt", "chosen", "rejected")
    ]
    for text in texts:
        ids = tokenizer(text)["input_ids"]  # no special tokens added
        assert len(ids) == len(text) and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text


def test_chat_template(tokenizer):
    messages = [{"role": "user", "content": PROMPT}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "user: sort: 7 3 9 1\nassistant: "
    messages.append({"role": "assistant", "content": "1 3 7 9"})
    conversation = tokenizer.apply_chat_template(messages, tokenize=False)
    assert conversation == "user: sort: 7 3 9 1\nassistant: 1 3 7 9\n"


def test_save_and_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = ALPHABET + "<eos>"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
    assert loaded.chat_template == tokenizer.chat_template
    messages = [{"role": "user", "content": PROMPT}]
    rendered = loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "user: sort: 7 3 9 1\nassistant: "
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.all_special_tokens == tokenizer.all_special_tokens
