"""Every row format, auto-detection, column mapping and unpairing, end to end to token ids."""

import pytest
from data_rows import GOOD, build_bpe_tokenizer, make_module, write_jsonl

from lit_align.data.formats import DataError, RowContext, detect_format, normalize_row
from lit_align.lightning_cli import run_lightning_cli

CTX = RowContext("test", "train", 0)
HH = {
    "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant: 4",
    "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant: 5 maybe",
}
USER = [{"role": "user", "content": "sort: 2 1"}]


def test_paired_text_with_scores_and_system_prompt(tmp_path):
    row = {**GOOD, "score_chosen": 9, "score_rejected": 2.5}
    path = write_jsonl(tmp_path / "d.jsonl", [row] * 3)
    dm = make_module(path, batch_size=3, system_prompt="be brief")
    assert dm.format == "paired"
    ex = dm.train_data[0]
    assert dm.tokenizer.decode(ex["prompt_ids"]) == "be brief\nsort: 3 1 2\n"
    batch = next(iter(dm.train_dataloader()))
    assert batch.score_chosen.tolist() == [9.0] * 3 and batch.score_rejected.tolist() == [2.5] * 3


def test_ultrafeedback_rows_with_system_prompt(tmp_path):
    """Whole conversations sharing their history, UltraFeedback's scores, a system message."""
    row = {
        "prompt": "sort: 2 1",
        "chosen": USER + [{"role": "assistant", "content": "1 2"}],
        "rejected": USER + [{"role": "assistant", "content": "2 1"}],
        "score_chosen": 8.0,
        "score_rejected": 3.0,
    }
    dm = make_module(write_jsonl(tmp_path / "uf.jsonl", [row]), batch_size=1, system_prompt="hi")
    tok, ex = dm.tokenizer, dm.train_data[0]
    assert dm.format == "conversational"
    assert tok.decode(ex["prompt_ids"]) == "system: hi\nuser: sort: 2 1\nassistant: "
    assert tok.decode(ex["rejected_ids"][:-1]) == "2 1\n"
    assert ex["score_chosen"] == 8.0


def test_implicit_prompt_is_the_shared_dialogue_up_to_the_last_assistant_marker(tmp_path):
    out = normalize_row(HH, "implicit_prompt", CTX, build_bpe_tokenizer())
    assert out == {
        "prompt": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: 2+2?\n\nAssistant:",
        "chosen": " 4",
        "rejected": " 5 maybe",
    }
    assert detect_format(["chosen", "rejected"], HH, "x") == "implicit_prompt"
    with pytest.raises(DataError, match=r"field 'chosen': no shared '\\n\\nAssistant:'"):
        normalize_row({"chosen": "a b", "rejected": "a c"}, "implicit_prompt", CTX, None)
    with pytest.raises(DataError, match="field 'rejected': empty response after the last"):
        normalize_row({**HH, "rejected": HH["chosen"][:-2]}, "implicit_prompt", CTX, None)


def test_implicit_prompt_file_tokenises_prompt_and_responses(tmp_path, bpe_dir):
    dm = make_module(write_jsonl(tmp_path / "hh.jsonl", [HH] * 2), tokenizer=str(bpe_dir))
    tok, ex = dm.tokenizer, dm.train_data[0]
    assert dm.format == "implicit_prompt"
    assert tok.decode(ex["prompt_ids"]).endswith("2+2?\n\nAssistant:")
    assert tok.decode(ex["chosen_ids"]) == " 4<eos>"


def test_unpaired_text_and_messages(tmp_path):
    rows = [
        {"prompt": "sort: 2 1\n", "completion": "1 2", "label": True},
        {"prompt": USER, "completion": [{"role": "assistant", "content": "2 1"}], "label": False},
    ]
    dm = make_module(write_jsonl(tmp_path / "u.jsonl", rows), batch_size=2)
    assert dm.format == "unpaired" and not dm.kl_rows
    tok = dm.tokenizer
    assert tok.decode(dm.train_data[1]["prompt_ids"]) == "user: sort: 2 1\nassistant: "
    assert tok.decode(dm.train_data[1]["completion_ids"][:-1]) == "2 1\n"
    batch = next(iter(dm.train_dataloader()))
    assert batch.input_ids.shape[0] == 2 and not batch.paired
    assert sorted(batch.labels.tolist()) == [False, True]
    summary = dm.summary()
    assert "2 examples kept of 2 rows" in summary and "1 desirable, 1 undesirable" in summary


def test_unpair_turns_each_pair_into_a_desirable_and_an_undesirable_row(tmp_path):
    rows = [GOOD, {**GOOD, "chosen": "1 2 3 ", "rejected": "2 1 3"}]
    dm = make_module(write_jsonl(tmp_path / "p.jsonl", rows), unpair=True, batch_size=4)
    data, tok = dm.train_data, dm.tokenizer
    assert data["label"] == [True, False, True, False]
    assert [tok.decode(ids[:-1]) for ids in data["completion_ids"]] == [
        "1 2 3",
        "3 2 1",
        "1 2 3 ",
        "2 1 3",
    ]
    assert "4 examples kept of 2 rows" in dm.summary()


def test_label_noise_negates_unpaired_labels(tmp_path):
    rows = [{"prompt": "sort: 1\n", "completion": "1", "label": True}] * 10
    dm = make_module(write_jsonl(tmp_path / "u.jsonl", rows), label_noise=0.3)
    assert dm.train_data["label"].count(False) == 3


def test_column_mapping(tmp_path):
    rows = [{"question": "sort: 2 1\n", "good": "1 2", "bad": "2 1", "prompt": "ignored"}] * 2
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    dm = make_module(path, columns=columns)
    assert dm.tokenizer.decode(dm.train_data[0]["prompt_ids"]) == "sort: 2 1\n"
    with pytest.raises(DataError, match=r"--data.columns maps 'chosen' to column 'nice', which"):
        make_module(path, columns={**columns, "chosen": "nice"})
    with pytest.raises(ValueError, match=r"--data.columns: unknown field\(s\) \['answer'\]"):
        make_module(path, columns={"answer": "good"})


def test_columns_format_and_flags_parse_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_lightning_cli(
        [
            "--data.columns={prompt: question, chosen: good, rejected: bad}",
            "--data.format=implicit_prompt",
            "--data.unpair=true",
            "--data.on_bad_rows=skip",
            "--data.truncation=drop",
            "--data.group_by_length=true",
            "--trainer.logger=false",
        ],
        run=False,
    )
    hp = cli.datamodule.hparams
    assert cli.datamodule.columns == {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert (hp.format, hp.unpair, hp.on_bad_rows, hp.truncation) == (
        "implicit_prompt",
        True,
        "skip",
        "drop",
    )


def test_explicit_format_and_undetectable_columns(tmp_path):
    rows = [{"prompt": USER, "chosen": "1 2", "rejected": "2 1"}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    with pytest.raises(DataError, match=r"expected a string, got list \(messages: use --data"):
        make_module(path, format="paired")
    assert make_module(path).format == "conversational"  # a list prompt means messages
    with pytest.raises(DataError, match=r"cannot detect the format from columns \['a', 'b'\]"):
        make_module(write_jsonl(tmp_path / "x.jsonl", [{"a": "1", "b": "2"}]))
