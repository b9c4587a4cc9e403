"""Tests of lit_align.eval.generate on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from lit_align.eval.generate import GenerationConfig, generate_responses, read_jsonl, write_jsonl

PROMPTS = ["sort: 3 1 2\n", "hello\n", "a much longer prompt than the others\n", "x"]


def test_greedy_is_deterministic_and_ignores_seed(lm, tokenizer):
    config = GenerationConfig(max_new_tokens=8, batch_size=2)
    first = generate_responses(lm, tokenizer, PROMPTS, config)
    again = generate_responses(lm, tokenizer, PROMPTS, config)
    other_seed = generate_responses(
        lm, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=8, seed=5)
    )
    assert first == again == other_seed
    assert len(first) == len(PROMPTS) and all(first)


def test_sampling_depends_on_seed_only_and_keeps_global_rng(lm, tokenizer):
    config = GenerationConfig(max_new_tokens=16, do_sample=True, temperature=1.5, seed=1)
    rng_before = torch.get_rng_state()
    first = generate_responses(lm, tokenizer, PROMPTS, config)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert generate_responses(lm, tokenizer, PROMPTS, config) == first
    other = GenerationConfig(max_new_tokens=16, do_sample=True, temperature=1.5, seed=2)
    assert generate_responses(lm, tokenizer, PROMPTS, other) != first


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


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("max_new_tokens", 0, "max_new_tokens must be >= 1, got 0"),
        ("temperature", 0, "temperature must be > 0, got 0"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\], got 0.0"),
        ("top_p", 1.5, r"top_p must be in \(0, 1\], got 1.5"),
        ("seed", -1, "seed must be >= 0, got -1"),
        ("batch_size", 0, "batch_size must be >= 1, got 0"),
    ],
)
def test_generation_config_validation(field, value, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**{field: value})


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
