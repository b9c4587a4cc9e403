"""Tokenisation: the exact prompt/response boundary, eos and bos, truncation strategies, and the
fingerprinted cache of ``datasets.map``."""

import os

import pytest
from data_rows import GOOD, build_bpe_tokenizer, make_module, write_jsonl

from lit_align.data.collate import Truncation, special_prefix, tokenize_row
from lit_align.data.synthetic import build_task_tokenizer

MESSAGES = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
CONV = {
    "prompt": MESSAGES[:1],
    "chosen": MESSAGES[1:],
    "rejected": [{"role": "assistant", "content": "5"}],
}


def test_boundary_is_exact_when_the_tokenizer_merges_across_it(tmp_path, bpe_dir):
    dm = make_module(write_jsonl(tmp_path / "c.jsonl", [CONV]), tokenizer=str(bpe_dir))
    tok, ex = dm.tokenizer, dm.train_data[0]
    prompt = tok.apply_chat_template(MESSAGES[:1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(MESSAGES, tokenize=False)
    assert (prompt, full) == ("<bos>user: 2+2?\nassistant:", "<bos>user: 2+2?\nassistant: 4\n")
    # The tokenizer merges ": " across the boundary: splitting full-text ids would be wrong.
    offsets = tok(full, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert any(start < len(prompt) < end for start, end in offsets)
    assert ex["prompt_ids"] == tok(prompt, add_special_tokens=False)["input_ids"]
    assert ex["prompt_ids"].count(tok.bos_token_id) == 1  # rendered by the template, not doubled
    assert ex["chosen_ids"] == tok(" 4\n", add_special_tokens=False)["input_ids"] + [
        tok.eos_token_id
    ]
    assert tok.decode(ex["prompt_ids"] + ex["chosen_ids"]) == full + "<eos>"
    batch = next(iter(dm.train_dataloader()))  # rows: chosen, rejected
    n_prompt = len(ex["prompt_ids"])
    n_resp = len(ex["chosen_ids"])
    assert batch.response_mask[0].nonzero().flatten().tolist() == list(
        range(n_prompt, n_prompt + n_resp)
    )
    assert batch.input_ids[0, n_prompt:].tolist() == ex["chosen_ids"]


def test_text_prompts_start_with_the_tokenizers_bos(tmp_path, bpe_dir):
    assert special_prefix(build_bpe_tokenizer()) == [1]
    assert special_prefix(build_task_tokenizer()) == []
    rows = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    dm = make_module(write_jsonl(tmp_path / "p.jsonl", rows), tokenizer=str(bpe_dir))
    assert dm.tokenizer.decode(dm.train_data[0]["prompt_ids"]) == "<bos>2+2?"


@pytest.mark.parametrize(
    ("trunc", "chosen", "expected", "truncated"),
    [
        # fits: nothing cut, even past max_length // 2 (the prompt limit)
        (Truncation(16), "xyz", "abcdefghijkl", False),
        # too long: the prompt gives up only what the longest response needs (9 = 16 - 7) ...
        (Truncation(16), "123456", "defghijkl", True),
        # ... but never goes below the limit (8); then the response is cut, keeping its start
        (Truncation(16), "1234567890", "efghijkl", True),
        (Truncation(16, prompt_side="keep_start"), "1234567890", "abcdefgh", True),
        # an explicit max_prompt_length always applies
        (Truncation(16, max_prompt_length=4), "xyz", "ijkl", True),
    ],
)
def test_truncation_strategies(trunc, chosen, expected, truncated):
    tok = build_task_tokenizer()
    row = {"prompt": "abcdefghijkl", "chosen": chosen, "rejected": "r"}
    out = tokenize_row(row, tok, trunc)
    assert tok.decode(out["prompt_ids"]) == expected
    room = 16 - len(expected)
    whole = tok(chosen, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert out["chosen_ids"] == whole[:room]
    assert out["truncated"] is truncated and not out["dropped"]
    assert out["length"] == len(expected) + min(len(whole), room)


def test_truncated_bos_prompt_keeps_its_bos():
    tok = build_bpe_tokenizer()
    out = tokenize_row(
        {"prompt": "abcdefghij", "completion": "xyz", "label": True}, tok, Truncation(8), [1]
    )
    assert tok.decode(out["prompt_ids"]) == "<bos>hij" and out["label"] is True


def test_drop_policy_drops_and_counts_rows_that_do_not_fit(tmp_path):
    rows = [GOOD, {**GOOD, "chosen": "1 2 3 4 5 6 7 8 9"}, GOOD]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    dm = make_module(path, max_length=24, truncation="drop")
    assert len(dm.train_data) == 2
    assert "train: 2 pairs kept of 3 rows (0 bad skipped, 1 truncated, 1 dropped)" in (dm.summary())
    kept = make_module(path, max_length=24)
    assert len(kept.train_data) == 3 and kept.stats["train"].truncated == 1


def _fingerprint(dm):
    files = [f["filename"] for f in dm.train_data.cache_files]
    return dm.train_data._fingerprint, files


def test_tokenised_cache_is_keyed_by_tokenizer_template_and_settings(tmp_path, bpe_dir):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {**GOOD, "chosen": "1 2 3 "}] * 4)
    other_template = tmp_path / "bpe_other_template"
    tok = build_bpe_tokenizer()
    tok.chat_template = "{{ messages[0]['content'] }}"
    tok.save_pretrained(other_template)
    cache = tmp_path / "cache"

    def fp(**kwargs):
        return _fingerprint(make_module(path, cache_dir=str(cache), **kwargs))

    base = fp(tokenizer=str(bpe_dir))
    written = [os.stat(f).st_mtime_ns for f in base[1]]
    assert fp(tokenizer=str(bpe_dir)) == base  # same settings: the same cache files, reused
    assert [os.stat(f).st_mtime_ns for f in base[1]] == written
    assert all(f.startswith(str(cache / "lit_align")) for f in base[1])
    variants = [
        fp(),  # another tokenizer
        fp(tokenizer=str(other_template)),  # the same vocabulary, another chat template
        fp(tokenizer=str(bpe_dir), max_length=32),
        fp(tokenizer=str(bpe_dir), max_prompt_length=8),
        fp(tokenizer=str(bpe_dir), prompt_truncation="keep_start"),
        fp(tokenizer=str(bpe_dir), truncation="drop"),
        fp(tokenizer=str(bpe_dir), system_prompt="be brief"),
        fp(tokenizer=str(bpe_dir), unpair=True),
    ]
    names = [base] + variants
    assert len({f for f, _ in names}) == len(names)
    assert len({tuple(files) for _, files in names}) == len(names)


def test_num_proc_gives_the_same_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, {**GOOD, "chosen": "1 2 3 "}] * 8)
    one = make_module(path, cache_dir=str(tmp_path / "a"))
    two = make_module(path, cache_dir=str(tmp_path / "b"), num_proc=2)
    assert two.train_data.to_list() == one.train_data.to_list()
    assert len(two.train_data.cache_files) == 2  # one shard per process


def test_a_response_the_template_closed_with_eos_gets_no_second_eos():
    """ChatML-style templates write ``<eos>\n`` after each turn (the rendered response is
    ``4<eos>\n``): the response ends at that eos, where generation stops, instead of
    ``4<eos>\n<eos>``. Text after an eos is kept and gets its own eos."""
    tok = build_bpe_tokenizer()
    eos = tok.eos_token_id

    def ids(response: str) -> list[int]:
        row = {"prompt": "q", "chosen": response, "rejected": "5"}
        return tokenize_row(row, tok, Truncation(32))["chosen_ids"]

    assert ids("4<eos>\n") == tok("4", add_special_tokens=False)["input_ids"] + [eos]
    assert ids("4") == tok("4", add_special_tokens=False)["input_ids"] + [eos]
    assert ids("4<eos> 7") == tok("4<eos> 7", add_special_tokens=False)["input_ids"] + [eos]


def test_summary_states_the_prompt_floor_and_counts_prompts_over_it(tmp_path):
    """Without max_prompt_length, max_length // 2 is a floor that long prompts of rows that fit
    keep exceeding; the summary says so and counts them (here 2 of 3 prompts, none cut)."""
    rows = [
        GOOD,
        {**GOOD, "prompt": "sort: 9 8 7 6 5 4 3\n"},
        {**GOOD, "prompt": "sort: 9 8 7 6 5 4\n"},
    ]
    dm = make_module(write_jsonl(tmp_path / "d.jsonl", rows), max_length=32)
    summary = dm.summary()
    assert "a prompt is cut only when its row exceeds max_length, never below 16 tokens" in summary
    assert "scores: not found" in summary and "2 prompts longer than 16 tokens" in summary
    assert dm.stats["train"].truncated == 0
