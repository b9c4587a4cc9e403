"""Prompt/response boundaries with SmolLM2's byte-level BPE tokenizer and ChatML template, in
all four data formats: the prompt is exactly the rendered prompt, each response ends with one
``<|im_end|>`` (the eos, which the template already writes: appending another one doubled it),
and the response mask covers exactly the tokens after the prompt.

The expected ChatML strings are written out here, not rendered by the code under test.
"""

import json

import pytest

from lit_align.data.datamodule import PreferenceDataModule

pytestmark = pytest.mark.real

DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n"
)
USER = [{"role": "user", "content": "What is 2+2?"}]
MULTI_TURN = [
    {"role": "system", "content": "Answer with a number."},
    {"role": "user", "content": "What is 1+1?"},
    {"role": "assistant", "content": "2"},
    {"role": "user", "content": "And 2+2?"},
]
MULTI_TURN_PROMPT = (
    "<|im_start|>system\nAnswer with a number.<|im_end|>\n<|im_start|>user\nWhat is 1+1?"
    "<|im_end|>\n<|im_start|>assistant\n2<|im_end|>\n<|im_start|>user\nAnd 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n"
)
CASES = {
    # format: (rows, data module options, expected prompt text, chosen, rejected)
    "paired": (
        [{"prompt": "What is 2+2?", "chosen": " 4", "rejected": " 5"}],
        {"system_prompt": "Be brief."},
        "Be brief.\nWhat is 2+2?",
        " 4<|im_end|>",
        " 5<|im_end|>",
    ),
    "conversational": (
        [{"prompt": USER, "chosen": "4", "rejected": [{"role": "assistant", "content": "5"}]}],
        {},
        DEFAULT_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "4<|im_end|>",
        "5<|im_end|>",
    ),
    "conversational_system_prompt": (
        [{"prompt": USER, "chosen": "4", "rejected": "5"}],
        {"system_prompt": "Be brief.", "format": "conversational"},
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n",
        "4<|im_end|>",
        "5<|im_end|>",
    ),
    "conversational_multi_turn": (  # whole conversations (UltraFeedback layout)
        [
            {
                "chosen": [*MULTI_TURN, {"role": "assistant", "content": "4"}],
                "rejected": [*MULTI_TURN, {"role": "assistant", "content": "Five."}],
            }
        ],
        {"format": "conversational"},
        MULTI_TURN_PROMPT,
        "4<|im_end|>",
        "Five.<|im_end|>",
    ),
    "implicit_prompt": (
        [
            {
                "chosen": "\n\nHuman: What is 1+1?\n\nAssistant: 2\n\nHuman: And 2+2?"
                "\n\nAssistant: 4",
                "rejected": "\n\nHuman: What is 1+1?\n\nAssistant: 2\n\nHuman: And 2+2?"
                "\n\nAssistant: 5, I think",
            }
        ],
        {},
        "\n\nHuman: What is 1+1?\n\nAssistant: 2\n\nHuman: And 2+2?\n\nAssistant:",
        " 4<|im_end|>",
        " 5, I think<|im_end|>",
    ),
    "unpaired": (
        [
            {"prompt": MULTI_TURN, "completion": "4", "label": True},
            {"prompt": MULTI_TURN, "completion": "22", "label": False},
        ],
        {},
        MULTI_TURN_PROMPT,
        "4<|im_end|>",
        "22<|im_end|>",
    ),
}


def _module(tmp_path, model_dir, rows, options) -> PreferenceDataModule:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = PreferenceDataModule(
        dataset=str(path), tokenizer=str(model_dir), cache_dir=str(tmp_path), **options
    )
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("case", list(CASES))
def test_prompt_and_responses_split_exactly(case, tmp_path, real_model_dir, real_tokenizer):
    rows, options, prompt, *responses = CASES[case]
    dm = _module(tmp_path, real_model_dir, rows, options)
    tok, eos = real_tokenizer, real_tokenizer.eos_token_id
    assert tok.eos_token == "<|im_end|>"
    data = dm.train_data
    fields = ["completion_ids"] * 2 if "completion_ids" in data.column_names else None
    fields = fields or ["chosen_ids", "rejected_ids"]
    examples = [data[i % len(data)] for i in range(2)]  # unpaired: one row per response
    for example, field, response in zip(examples, fields, responses):
        assert example["prompt_ids"] == tok(prompt, add_special_tokens=False)["input_ids"]
        ids = example[field]
        assert tok.decode(ids) == response
        assert ids.count(eos) == 1 and ids[-1] == eos  # one end of turn, nothing after it
    batch = next(iter(dm.train_dataloader()))
    for row in range(batch.input_ids.shape[0]):
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        masked = batch.response_mask[row][: len(ids)]
        n_prompt = len(examples[0]["prompt_ids"])
        assert tok.decode(ids[:n_prompt]) == prompt  # what is masked is exactly the prompt
        assert not masked[:n_prompt].any() and masked[n_prompt:].all()
        assert not batch.response_mask[row][len(ids) :].any()  # padding
        assert tok.decode(ids[n_prompt:]) in responses
