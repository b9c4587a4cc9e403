"""docs/losses.md is generated from the loss classes (lit_align/docs.py) and must match."""

import inspect
import re

import pytest

from lit_align.docs import (
    DOCS_PATH,
    MODIFIER_SWITCHES,
    loss_table,
    main,
    modifier_parameters,
    render_page,
)
from lit_align.losses import ALL_LOSSES

ARXIV = r"arXiv (\d{4}\.\d{4,5})"


def row_cells(name: str) -> list[str]:
    """The cells of the table row of loss ``name``, with escaped pipes restored."""
    rows = [line for line in loss_table().splitlines() if line.startswith(f"| `{name}` |")]
    assert len(rows) == 1, f"{name}: {len(rows)} rows"
    cells = re.split(r"(?<!\\) \| ", rows[0].strip("| "))
    return [cell.replace("\\|", "|") for cell in cells]


def test_docs_page_is_up_to_date():
    assert DOCS_PATH.read_text(encoding="utf-8") == render_page(), (
        "docs/losses.md is out of date: run `python -m lit_align.docs`"
    )


@pytest.mark.parametrize("cls", ALL_LOSSES, ids=lambda cls: cls.__name__)
def test_every_loss_has_a_row_with_its_own_formula_and_paper(cls):
    # Defined on the class itself: a subclass must not silently show its parent's formula.
    assert "formula" in vars(cls) and "paper" in vars(cls)
    assert cls.formula.strip() and "\n" not in cls.formula
    cited = re.findall(ARXIV, cls.paper)
    assert cited, f"{cls.__name__}.paper has no arXiv id: {cls.paper!r}"
    # Where the docstring cites arXiv ids, the short citation names one of them.
    in_docstring = re.findall(ARXIV, inspect.getdoc(cls))
    assert not in_docstring or set(cited) & set(in_docstring)
    cells = row_cells(cls.__name__)
    assert cells[1] == f"`{cls.formula}`"
    assert all(f"[{arxiv_id}](https://arxiv.org/abs/{arxiv_id})" in cells[3] for arxiv_id in cited)


@pytest.mark.parametrize(
    "name, hyperparameters, reference, data, token_inputs",
    [
        (
            "SPO",
            "`beta=0.1`, `alpha=0.0`, `target_reward_gap=1.0`, `use_scores=True`, "
            "+ [modifiers](#modifiers)",
            "yes",
            "paired",
            "—",
        ),
        (
            "AOT",
            "`beta=0.1`, `label_smoothing=0.0`, + [modifiers](#modifiers): only `ld_alpha`",
            "yes",
            "paired",
            "—",
        ),
        (
            "IPO",
            "`beta=0.1`, `normalize='mean'`, + [modifiers](#modifiers): only `wpo`",
            "yes",
            "paired",
            "—",
        ),
        ("Hinge", "`beta=0.1`, + [modifiers](#modifiers)", "yes", "paired", "—"),
        (
            "BNF",
            "`length_normalization='min_in_batch'`, `form='exact'`",
            "yes",
            "both",
            "log-probs, entropy",
        ),
        ("SFT", "—", "no", "both", "—"),
        ("SimPO", "`beta=2.0`, `gamma=1.0`", "no", "paired", "—"),
        (
            "KTO",
            "`beta=0.1`, `desirable_weight=1.0`, `undesirable_weight=1.0`",
            "yes",
            "unpaired + KL rows",
            "—",
        ),
        ("BCO", "`beta=0.1`", "yes", "unpaired", "—"),
        (
            "WeightedSum",
            "`losses` (required), `weights` (required)",
            "if a component needs one",
            "what all components support",
            "what any component needs",
        ),
    ],
)
def test_rows_follow_signatures_and_capabilities(
    name, hyperparameters, reference, data, token_inputs
):
    cells = row_cells(name)
    assert cells[2] == hyperparameters
    assert cells[4:] == [reference, data, token_inputs]


def test_modifier_switches_name_margin_loss_modifiers():
    names = [p.name for p in modifier_parameters()]
    assert names == ["divergence", "divergence_alpha", "ld_alpha", "wpo"]
    assert set(MODIFIER_SWITCHES) <= set(names)


def test_modifiers_are_listed_once_below_the_table():
    table = loss_table()
    notes = table.split("### Modifiers", 1)[1]
    for flag in ("`divergence='reverse_kl'`", "`divergence_alpha=0.5`", "`ld_alpha=None`"):
        assert table.count(flag) == 1 and flag in notes
    assert "`wpo=False`: weight each pair by WPO's aligned likelihood weight" in notes
    assert "One of `reverse_kl`, `forward_kl`, `js`, `alpha`." in notes
    assert "Setting `ld_alpha` makes the loss read per-token log-probs." in notes
    assert "Setting `wpo` makes the loss read the policy's per-token entropy" in notes


def test_check_fails_on_a_missing_or_stale_page(tmp_path, capsys):
    page = tmp_path / "losses.md"
    check = ["--check", "--output", str(page)]
    assert main(check) == 1
    assert main(["--output", str(page)]) == 0
    assert main(check) == 0
    page.write_text(page.read_text(encoding="utf-8").replace("`beta=0.1`", "`beta=0.2`"))
    assert main(check) == 1
    assert "is out of date: run `python -m lit_align.docs`" in capsys.readouterr().err
