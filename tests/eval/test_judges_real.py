"""Judges with a real chat template (SmolLM2's ChatML tokenizer) and tiny judge models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaConfig

from lit_align.eval.compare import make_judge
from lit_align.eval.judges import PairwiseLLMJudge, RewardModelJudge, render_exchange

pytestmark = pytest.mark.real
CONVERSATION = [{"role": "user", "content": "What is 2+2?"}]


def _tiny(tokenizer, **overrides) -> LlamaConfig:
    """One layer, hidden size 8: the 49k-token embedding dominates (~0.4 M parameters)."""
    sizes = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1}
    heads = {"num_attention_heads": 2, "num_key_value_heads": 1, "initializer_range": 0.5}
    return LlamaConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **sizes, **heads,
        **overrides,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_rm(real_tokenizer):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(_tiny(real_tokenizer, num_labels=1))


def test_exchange_is_rendered_with_the_chat_template(real_tokenizer):
    text = render_exchange(real_tokenizer, CONVERSATION, "4")
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n4<|im_end|>\n")
    assert render_exchange(real_tokenizer, "What is 2+2?", "4") == text  # text = one user turn


def test_reward_model_scores_the_templated_exchange(real_tokenizer, tiny_rm):
    """The judge's score is the model's logit on the ChatML rendering, not on prompt + response;
    batching (left padding) does not change it."""
    judge = RewardModelJudge(tiny_rm, real_tokenizer, batch_size=2)
    responses = ["4", "It is four, of course."]
    scores = judge.score([CONVERSATION] * 2, responses)
    for response, score in zip(responses, scores):
        text = render_exchange(real_tokenizer, CONVERSATION, response)
        ids = real_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            assert tiny_rm(input_ids=ids).logits[0, 0].item() == pytest.approx(score, abs=1e-5)
    plain = real_tokenizer("What is 2+2?4", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert tiny_rm(input_ids=plain).logits[0, 0].item() != pytest.approx(scores[0], abs=1e-3)


def test_any_sequence_classification_directory_is_a_judge(tmp_path, real_tokenizer, tiny_rm):
    """A saved reward model (as lit_align exports one) without pad_token_id in its config loads
    through --judge reward_model; the tokenizer's pad id is filled in."""
    tiny_rm.config.pad_token_id = None
    tiny_rm.save_pretrained(tmp_path)
    real_tokenizer.save_pretrained(tmp_path)
    tiny_rm.config.pad_token_id = real_tokenizer.pad_token_id
    judge = make_judge("reward_model", "data.jsonl", str(tmp_path))
    assert isinstance(judge, RewardModelJudge)
    assert judge.model.config.pad_token_id == real_tokenizer.pad_token_id
    expected = RewardModelJudge(tiny_rm, real_tokenizer).score([CONVERSATION], ["4"])
    assert judge.score([CONVERSATION], ["4"]) == pytest.approx(expected, abs=1e-5)


def test_a_long_exchange_keeps_its_end(real_tokenizer, tiny_rm):
    """An exchange longer than the judge's max_length is scored on its last tokens (where the
    response and the score token are), not on positions the model was never trained on."""
    prompt = [{"role": "user", "content": "Tell me about the sea. " * 20}]
    text = render_exchange(real_tokenizer, prompt, "It is wide.")
    ids = real_tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 40
    judge = RewardModelJudge(tiny_rm, real_tokenizer, max_length=24)
    with torch.no_grad():
        expected = tiny_rm(input_ids=ids[:, -24:]).logits[0, 0].item()
        whole = tiny_rm(input_ids=ids).logits[0, 0].item()
    assert judge.score([prompt], ["It is wide."]) == [pytest.approx(expected, abs=1e-5)]
    assert expected != pytest.approx(whole, abs=1e-4)
    default = RewardModelJudge(tiny_rm, real_tokenizer)
    assert default.max_length == tiny_rm.config.max_position_embeddings


def test_an_exported_judge_reads_what_its_run_trained_on(tmp_path, real_tokenizer, tiny_rm):
    """make_judge gives a lit_align export its training run's data.max_length."""
    export = tmp_path / "export"
    tiny_rm.save_pretrained(export)
    real_tokenizer.save_pretrained(export)
    (tmp_path / "config.yaml").write_text("data:\n  max_length: 24\n")
    assert make_judge("reward_model", "data.jsonl", str(export)).max_length == 24
    (tmp_path / "config.yaml").unlink()  # not a lit_align run: the model's own context
    judge = make_judge("reward_model", "data.jsonl", str(export))
    assert judge.max_length == tiny_rm.config.max_position_embeddings


def test_pairwise_judge_reads_its_instruction_as_a_chat_turn(real_tokenizer):
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(_tiny(real_tokenizer))
    judge = PairwiseLLMJudge(lm, real_tokenizer, batch_size=4)
    text = judge.render(CONVERSATION, "4", "5")
    assert text.startswith("<|im_start|>system\n")
    assert (
        "<|im_start|>user\n[Question]\nWhat is 2+2?\n\n[Response A]\n4\n\n[Response B]\n5" in text
    )
    assert text.endswith("Answer A or B.<|im_end|>\n<|im_start|>assistant\n")
    assert real_tokenizer.convert_ids_to_tokens(judge.ids_a) == ["A", "ĠA"]
    prompts, a, b = [CONVERSATION, "Name a colour."], ["4", "red"], ["5", "a long answer"]
    prefs = judge.preference(prompts, a, b)
    mirrored = PairwiseLLMJudge(lm, real_tokenizer, batch_size=1).preference(prompts, b, a)
    assert prefs == pytest.approx([1 - p for p in mirrored], abs=1e-5)
