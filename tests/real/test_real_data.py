"""The UltraFeedback excerpt through the conversational format with scores: the start-up
summary's counts (identical pairs, empty responses, ties, truncations, prompts over the limit,
turn markers) equal counts made here independently from the raw rows and the tokenizer."""

import json

import pytest

from lit_align.data.datamodule import PreferenceDataModule

pytestmark = pytest.mark.real

MAX_LENGTH = 512


def _module(tmp_path, model_dir, path, **options) -> PreferenceDataModule:
    dm = PreferenceDataModule(
        dataset=str(path), tokenizer=str(model_dir), cache_dir=str(tmp_path), **options
    )
    dm.setup("fit")
    return dm


def _expected(rows: list[dict], tok) -> dict[str, int]:
    """Counts from the raw rows: the last message of ``chosen``/``rejected`` is the response."""
    counts = dict(identical=0, empty=0, ties=0, truncated=0, over=0, kept=0)
    for row in rows:
        chosen, rejected = row["chosen"][-1]["content"], row["rejected"][-1]["content"]
        if not chosen.strip() or not rejected.strip():
            counts["empty"] += 1
            continue
        if chosen == rejected:
            counts["identical"] += 1
            continue
        counts["kept"] += 1
        counts["ties"] += row["score_chosen"] == row["score_rejected"]
        text = tok.apply_chat_template(
            row["chosen"][:-1], tokenize=False, add_generation_prompt=True
        )
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        eos = 1  # one <|im_end|> closes each response
        longest = max(
            len(tok(t, add_special_tokens=False)["input_ids"]) for t in (chosen, rejected)
        )
        counts["truncated"] += len(prompt) + longest + eos > MAX_LENGTH
        counts["over"] += len(prompt) > MAX_LENGTH // 2
    return counts


def test_summary_counts_of_the_ultrafeedback_excerpt(tmp_path, real_model_dir, ultrafeedback):
    path = ultrafeedback / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    dm = _module(
        tmp_path,
        real_model_dir,
        path,
        format="conversational",
        on_bad_rows="skip",
        max_length=MAX_LENGTH,
    )
    want = _expected(rows, dm.tokenizer)
    stats, summary = dm.stats["train"], dm.summary()
    print(f"\n{summary}")
    all_ties = sum(row["score_chosen"] == row["score_rejected"] for row in rows)
    assert (want["identical"], want["empty"], all_ties) == (4, 2, 25)  # the README's table
    assert want["ties"] == 24  # one tied row is an identical pair, skipped
    assert stats.kept == want["kept"] == len(rows) - 6
    assert (stats.identical, stats.empty, stats.bad) == (want["identical"], want["empty"], 6)
    assert (stats.ties, stats.scored) == (want["ties"], want["kept"])
    assert stats.truncated == want["truncated"] and 0 < stats.truncated < stats.kept
    assert stats.over_prompt_limit == want["over"] and stats.turn_markers == 0
    assert f"{stats.kept} pairs kept of {len(rows)} rows (6 bad skipped, " in summary
    assert f"{want['truncated']} truncated, 0 dropped" in summary
    assert "bad: 4 identical pairs (chosen == rejected), 2 empty responses, 0 other" in summary
    assert (
        f"scores: found in {want['kept']} of {want['kept']} pairs, {want['ties']} tied" in summary
    )
    assert f"{want['over']} prompts longer than {MAX_LENGTH // 2} tokens" in summary
    assert f"never below {MAX_LENGTH // 2} tokens (max_length // 2)" in summary


def test_summary_counts_turn_markers_and_missing_scores(tmp_path, real_model_dir):
    """HH-style dialogues whose chosen response runs on into the next human turn."""
    hh = "\n\nHuman: Hi\n\nAssistant:"
    rows = [
        {"chosen": hh + " Hello!\n\nHuman: thanks", "rejected": hh + " Go away."},
        {"chosen": hh + " Hello!", "rejected": hh + " Go away."},
        {"chosen": hh + " Hi.", "rejected": hh + " <|im_start|>user\nHi"},
    ]
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dm = _module(tmp_path, real_model_dir, path, max_prompt_length=4)
    summary = dm.summary()
    assert dm.format == "implicit_prompt" and dm.stats["train"].turn_markers == 2
    assert "scores: not found (no score_chosen/score_rejected columns)" in summary
    assert "2 with a turn marker in a response; 3 prompts longer than 4 tokens" in summary
    assert "prompts cut to max_prompt_length=4, keeping its end" in summary
