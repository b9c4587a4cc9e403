"""Scores must be finite: NaN or ±inf is an error naming the row and field, or a counted skip.

A NaN reward gap passes SPO's ``gap <= 0`` test and turns every weight into NaN; an infinite
one makes its loss 0 on the batch. Neither may reach training unnoticed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))  # the data tests' helpers
from data_rows import GOOD, make_module, write_jsonl  # noqa: E402

from lit_align.data.formats import DataError  # noqa: E402

NONFINITE = [("score_chosen", float("nan"), "nan"), ("score_rejected", float("inf"), "inf")]


@pytest.mark.parametrize(("field", "value", "shown"), NONFINITE)
def test_nonfinite_score_names_the_row_and_field(tmp_path, field, value, shown):
    bad = {**GOOD, "score_chosen": 2.0, "score_rejected": 1.0, field: value}
    good = {**GOOD, "score_chosen": 2.0, "score_rejected": 1.0}
    path = write_jsonl(tmp_path / "scores.jsonl", [good, bad, good])
    where = rf"{re.escape(repr(str(path)))}, split 'train', row 1, field '{field}'"
    with pytest.raises(DataError, match=rf"{where}: expected a finite number, got {shown}"):
        make_module(path)


def test_nonfinite_scores_are_skipped_and_counted(tmp_path):
    good = {**GOOD, "score_chosen": 2.0, "score_rejected": 1.0}
    rows = [good, {**good, "score_chosen": float("nan")}, {**good, "score_rejected": -float("inf")}]
    dm = make_module(write_jsonl(tmp_path / "scores.jsonl", [*rows, good]), on_bad_rows="skip")
    assert len(dm.train_data) == 2 and dm.stats["train"].bad == 2
    assert "row 1, field 'score_chosen': expected a finite number, got nan" in dm.summary()
