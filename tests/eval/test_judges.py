"""Tests of lit_align.eval.judges with fixed inputs and tiny models whose answers are known."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from lit_align.eval.judges import PairwiseLLMJudge, RewardModelJudge, RuleJudge

HAS_TASK = importlib.util.find_spec("lit_align.data.synthetic") is not None


def test_length_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="must have equal lengths, got 2, 1 and 2"):
        RuleJudge().compare(["p", "q"], ["a"], ["b", "c"])


@pytest.mark.skipif(not HAS_TASK, reason="lit_align.data.synthetic not written yet")
def test_rule_judge_known_answers():
    """For prompt "sort: 7 3 9 1\\n" the answer is "1 3 7 9" (score 1.0); "3 1 7 9" has LCS 3 with
    the answer over max(4, 4) + 1 = 5, score 0.6; "1 3 7" has LCS 3 over 5, also 0.6."""
    prompt = "sort: 7 3 9 1\n"
    judge = RuleJudge()
    assert judge.score([prompt, prompt], ["1 3 7 9", "3 1 7 9"]) == [1.0, pytest.approx(0.6)]
    outcomes = judge.compare(
        [prompt] * 3, ["1 3 7 9", "3 1 7 9", "3 1 7 9"], ["3 1 7 9", "1 3 7 9", "1 3 7"]
    )
    assert outcomes == [1.0, 0.0, 0.5]


def _last_char_reward_model(tokenizer, model):
    """Make the reward a known increasing function of the LAST real token's digit value.

    Zeroing every o_proj and down_proj leaves the residual stream equal to the token embedding,
    so the final hidden state is RMSNorm([v, 1, 0, ...]) = sqrt(32) * [v, 1, 0...] / sqrt(v^2 + 1)
    and a score head reading dim 0 gives r = sqrt(32) * v / sqrt(v^2 + 1), increasing in v. Digits
    have v = their value, other characters v = 0, and the pad token v = 100, so pooling a pad
    position (wrong with right padding) would make that text win.
    """
    values = torch.zeros(len(tokenizer))
    for digit in "0123456789":
        values[tokenizer.convert_tokens_to_ids(digit)] = float(digit)
    values[tokenizer.pad_token_id] = 100.0
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        embed = model.model.embed_tokens.weight
        embed.zero_()
        embed[:, 0], embed[:, 1] = values, 1.0
        model.score.weight.zero_()
        model.score.weight[0, 0] = 1.0
    return model


def test_reward_model_judge_known_ordering(tokenizer, reward_model):
    judge = RewardModelJudge(
        _last_char_reward_model(tokenizer, reward_model), tokenizer, batch_size=4
    )
    prompts = ["q: ", "q: ", "a longer prompt: "]
    a = ["9", "1 2 3 4 5", "7"]
    b = ["1 2 3 4 5 6 7", "9", "x 7"]
    assert judge.compare(prompts, a, b) == [1.0, 0.0, 0.5]
    scores = judge.score(prompts, a)
    assert scores[0] == pytest.approx(32**0.5 * 9 / (81 + 1) ** 0.5, rel=1e-5)
    assert RewardModelJudge(reward_model, tokenizer, batch_size=1).score(prompts, a) == (
        pytest.approx(scores, rel=1e-5)
    )


def test_reward_model_judge_loads_from_directory(tmp_path, tokenizer, reward_model):
    _last_char_reward_model(tokenizer, reward_model).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = RewardModelJudge(str(tmp_path))
    assert judge.compare(["q: "], ["8"], ["2"]) == [1.0]


def test_reward_model_judge_rejects_bad_models(tokenizer, make_config):
    config = make_config(tokenizer, num_labels=2)
    two_labels = AutoModelForSequenceClassification.from_config(config)
    with pytest.raises(ValueError, match="num_labels == 1 .* got 2"):
        RewardModelJudge(two_labels, tokenizer)
    no_pad = AutoModelForSequenceClassification.from_config(
        make_config(tokenizer, num_labels=1, pad_token_id=None)
    )
    with pytest.raises(ValueError, match=r"model.config.pad_token_id \(None\) must equal"):
        RewardModelJudge(no_pad, tokenizer)
    with pytest.raises(ValueError, match="tokenizer is required"):
        RewardModelJudge(no_pad)


def _biased_head(lm, bias: dict[int, float]) -> None:
    """Replace lm_head by zero weights plus ``bias``: the same next-token logits everywhere."""
    head = torch.nn.Linear(lm.config.hidden_size, lm.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for token_id, value in bias.items():
            head.bias[token_id] = value
    lm.lm_head = head


def test_pairwise_judge_position_bias_cancels_to_ties(tokenizer, lm):
    """A judge that always answers "A" (logit 3 vs 0) has p_ab = p_ba = sigmoid(3); the preference
    for a is (sigmoid(3) + 1 - sigmoid(3)) / 2 = 0.5 whatever the responses: all ties."""
    _biased_head(lm, {tokenizer.convert_tokens_to_ids("A"): 3.0})
    judge = PairwiseLLMJudge(lm, tokenizer, batch_size=3)
    prompts, a, b = ["sort: 2 1\n"] * 4, ["1 2", "2 1", "", "1 2 3 4"], ["2 1", "1 2", "x", "1"]
    assert judge.preference(prompts, a, b) == pytest.approx([0.5] * 4, abs=1e-6)
    assert judge.compare(prompts, a, b) == [0.5] * 4


def test_pairwise_judge_content_preference_survives_swap(tokenizer, lm, monkeypatch):
    """Fake logits: A gets +1 (position bias) + 2 if slot A holds "good"; B gets 2 if slot B holds
    "good". (good, bad): p_ab = sigmoid(3), p_ba = sigmoid(1 - 2), preference
    (sigmoid(3) + 1 - sigmoid(-1)) / 2 = (0.95257 + 0.73106) / 2 = 0.84182 -> 1.0. (bad, good) is
    1 - 0.84182 -> 0.0. (good, good): sigmoid(1) both ways -> 0.5 -> tie."""
    judge = PairwiseLLMJudge(lm, tokenizer)
    (id_a,), (id_b,) = judge.ids_a, judge.ids_b

    def fake_logits(texts):
        logits = torch.zeros(len(texts), len(tokenizer))
        for i, text in enumerate(texts):
            slot_a, slot_b = text.split("[Response B]")
            logits[i, id_a] = 1.0 + 2.0 * ("good" in slot_a.split("[Response A]")[1])
            logits[i, id_b] = 2.0 * ("good" in slot_b.split("Which")[0])
        return logits

    monkeypatch.setattr(judge, "_next_token_logits", fake_logits)
    prompts, a, b = ["q"] * 3, ["good", "bad", "good"], ["bad", "good", "good"]
    assert judge.preference(prompts, a, b) == pytest.approx([0.84182, 0.15818, 0.5], abs=1e-5)
    assert judge.compare(prompts, a, b) == [1.0, 0.0, 0.5]


def test_pairwise_judge_needs_single_token_answers(lm, make_tokenizer):
    lowercase_only = make_tokenizer("abc :\n")
    with pytest.raises(ValueError, match="no single token for 'A'"):
        PairwiseLLMJudge(lm, lowercase_only)


def test_pairwise_judge_on_a_random_model_is_batch_invariant_and_swap_symmetric(tokenizer, lm):
    """preference(b, a) = 1 - preference(a, b) by the swap, and left padding must not change the
    next-token logits: batch size 1 and 4 agree."""
    prompts, a, b = ["sort: 2 1\n", "q"], ["1 2", "x"], ["2 1", "a longer response"]
    prefs = PairwiseLLMJudge(lm, tokenizer, batch_size=4).preference(prompts, a, b)
    alone = PairwiseLLMJudge(lm, tokenizer, batch_size=1).preference(prompts, a, b)
    mirrored = PairwiseLLMJudge(lm, tokenizer, batch_size=4).preference(prompts, b, a)
    assert prefs == pytest.approx(alone, abs=1e-5)
    assert prefs == pytest.approx([1 - p for p in mirrored], abs=1e-5)
    assert max(abs(p - 0.5) for p in prefs) > 0.1  # not trivially all ties
