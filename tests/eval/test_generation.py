"""Tests of lit_align.eval.generate on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from tokenizers import processors
from transformers import GenerationConfig

from lit_align.eval.generate import (
    encode_left_padded,
    generate_responses,
    generation_config,
    read_jsonl,
    write_jsonl,
)

PROMPTS = ["sort: 3 1 2\n", "hello\n", "a much longer prompt than the others\n", "x"]


def test_greedy_is_deterministic_and_ignores_seed(lm, tokenizer):
    config = GenerationConfig(max_new_tokens=8)
    first = generate_responses(lm, tokenizer, PROMPTS, config, batch_size=2)
    again = generate_responses(lm, tokenizer, PROMPTS, config, batch_size=2)
    other_seed = generate_responses(lm, tokenizer, PROMPTS, config, seed=5)
    assert first == again == other_seed
    assert len(first) == len(PROMPTS) and all(first)


def test_sampling_depends_on_seed_only_and_keeps_global_rng(lm, tokenizer):
    config = GenerationConfig(max_new_tokens=16, do_sample=True, temperature=1.5, top_k=0)
    rng_before = torch.get_rng_state()
    first = generate_responses(lm, tokenizer, PROMPTS, config, seed=1)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert generate_responses(lm, tokenizer, PROMPTS, config, seed=1) == first
    assert generate_responses(lm, tokenizer, PROMPTS, config, seed=2) != first


def test_left_padding_matches_unbatched_output(lm, tokenizer):
    config = GenerationConfig(max_new_tokens=12)
    short, long = "ab\n", "a prompt that is many characters longer\n"
    alone = generate_responses(lm, tokenizer, [short], config)
    batched = generate_responses(lm, tokenizer, [short, long], config)
    assert batched[0] == alone[0]
    assert batched[1] == generate_responses(lm, tokenizer, [long], config)[0]


def test_restores_tokenizer_padding_side_and_training_mode(lm, tokenizer):
    tokenizer.padding_side = "right"
    lm.train()
    generate_responses(lm, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=2))
    assert tokenizer.padding_side == "right"
    assert lm.training


def _force_next_token(lm, token_id: int) -> None:
    """Make ``token_id`` the argmax at every position (logits = lm_head(h) + bias)."""
    head = torch.nn.Linear(lm.config.hidden_size, lm.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = 10.0
    lm.lm_head = head


def test_returns_only_new_text_up_to_max_new_tokens(lm, tokenizer):
    _force_next_token(lm, tokenizer.convert_tokens_to_ids("z"))
    out = generate_responses(lm, tokenizer, ["ab", "abcdef"], GenerationConfig(max_new_tokens=5))
    assert out == ["zzzzz", "zzzzz"]


def test_stops_at_eos(lm, tokenizer):
    _force_next_token(lm, tokenizer.eos_token_id)
    out = generate_responses(lm, tokenizer, ["ab", "abcdef"], GenerationConfig(max_new_tokens=5))
    assert out == ["", ""]


def test_generation_options_are_transformers_fields():
    """Every GenerationConfig field passes through (defaults: greedy, 64 new tokens); unknown
    names and values transformers rejects are errors naming --generation / the field."""
    config = generation_config({"top_k": 7, "repetition_penalty": 1.3, "stop_strings": ["\n"]})
    assert isinstance(config, GenerationConfig)
    assert (config.top_k, config.repetition_penalty, config.stop_strings) == (7, 1.3, ["\n"])
    assert (config.max_new_tokens, config.do_sample) == (64, False)
    with pytest.raises(ValueError, match=r"--generation: unknown option\(s\) \['top_kk'\]"):
        generation_config({"top_kk": 5})
    with pytest.raises(ValueError, match="max_new_tokens"):
        generation_config({"max_new_tokens": 0})


def test_repetition_penalty_and_stop_strings_take_effect(lm, tokenizer):
    """A head forcing "z" then "y" in turn: a huge repetition penalty bans the second "z", and the
    stop string "zy" ends generation once it appears."""
    _force_next_token(lm, tokenizer.convert_tokens_to_ids("z"))
    with torch.no_grad():
        lm.lm_head.bias[tokenizer.convert_tokens_to_ids("y")] = 9.0
    plain = generate_responses(lm, tokenizer, ["ab"], GenerationConfig(max_new_tokens=4))
    penalised = GenerationConfig(max_new_tokens=4, repetition_penalty=100.0)
    stopped = GenerationConfig(max_new_tokens=4, stop_strings=["zy"], repetition_penalty=100.0)
    assert plain == ["zzzz"]
    assert generate_responses(lm, tokenizer, ["ab"], penalised)[0].startswith("zy")
    assert generate_responses(lm, tokenizer, ["ab"], stopped) == ["zy"]


def test_bad_seed_or_batch_size(lm, tokenizer):
    with pytest.raises(ValueError, match="need seed >= 0 and batch_size >= 1, got 0 and 0"):
        generate_responses(lm, tokenizer, PROMPTS, batch_size=0)


def test_prompt_gets_the_special_prefix_once(tokenizer):
    """Prompts are tokenised as in training: with a tokenizer that puts bos first, bos leads
    every prompt once, also when the rendered text already starts with it."""
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tokenizer.bos_token_id)]
    )
    enc = encode_left_padded(tokenizer, ["ab", "<bos>abc"], "cpu")
    bos, pad = tokenizer.bos_token_id, tokenizer.pad_token_id
    assert enc["input_ids"][0].tolist()[:2] == [pad, bos]
    assert enc["input_ids"][1].tolist().count(bos) == 1
    assert enc["attention_mask"].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]


def test_missing_pad_token_is_a_clear_error(lm, tokenizer):
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="tokenizer has no pad token"):
        generate_responses(lm, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=2))


def test_jsonl_round_trip_and_bad_line(tmp_path):
    rows = [{"prompt": "sort: 2 1\n", "response": "1 2"}, {"prompt": "é", "response": ""}]
    path = tmp_path / "sub" / "gen.jsonl"
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    path.write_text('{"prompt": "a", "response": "b"}\n\n{oops\n')
    with pytest.raises(ValueError, match=r"gen.jsonl:3: not valid JSON"):
        read_jsonl(path)
