"""The loss catalogue as a Markdown table, generated from the loss classes (``docs/losses.md``).

Every cell comes from the code: the ``formula`` and ``paper`` class attributes, the capability
flags, and the constructor signatures (``**modifiers`` followed to
:class:`~lit_align.losses.margin.MarginLoss`, whose modifiers are listed once below the table).
``python -m lit_align.docs`` rewrites the page; ``--check`` exits 1 when it is stale.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin, get_type_hints

from lit_align.losses import ALL_LOSSES, LossConfigError, PreferenceLoss
from lit_align.losses.margin import MarginLoss

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "losses.md"
COLUMNS = (
    "Loss",
    "Formula",
    "Hyper-parameters (defaults)",
    "Paper",
    "Reference model",
    "Data",
    "Per-token inputs",
)
# A value that switches each modifier on (``divergence_alpha`` only tunes ``divergence``); used to
# find which modifiers a loss accepts with its default arguments.
MODIFIER_SWITCHES = {"divergence": "js", "ld_alpha": 0.5, "wpo": True}

HEADER = """\
# Preference losses

Generated from the loss classes by `python -m lit_align.docs`; do not edit by hand
(`python -m lit_align.docs --check` and `tests/test_docs.py` fail when this page
is out of date).

Select a loss by the name in the first column and set its hyper-parameters as
`--model.loss.<name>`:

```bash
lit-align fit --config configs/quickstart.yaml --model.loss SPO --model.loss.beta 0.1 \\
  --trainer.logger.init_args.version spo_beta0.1   # a run directory of its own
lit-align fit --model.loss.help SPO        # one loss's options, with their documentation
```

or in a config file (`WeightedSum` combines losses, here RPO = DPO + 0.5·SFT):

```yaml
model:
  loss:
    class_path: WeightedSum
    init_args:
      losses: [{class_path: DPO, init_args: {beta: 0.1}}, {class_path: SFT}]
      weights: [1.0, 0.5]
```

Columns:

- **Formula** — the loss of one pair (paired data) or one response (unpaired data); the batch
  loss is the mean. Greek letters are the row's hyper-parameters (β `beta`, ε `label_smoothing`
  or `epsilon`, α `alpha`, γ `gamma`, λ `lam`, τ `tau`, λ_D / λ_U `desirable_weight` /
  `undesirable_weight`); the class docstring gives the details and any deviation from the paper.
- **Hyper-parameters** — constructor arguments with their defaults (from the signature).
  "+ modifiers" marks the reference-based paired losses that also take the
  [modifiers](#modifiers) listed below the table.
- **Reference model** — whether a frozen reference model is built and run (`requires_reference`).
- **Data** — *paired* (chosen and rejected response per prompt), *unpaired* (responses labelled
  desirable or undesirable) or *both*; KL rows: the batch also holds the responses under
  mismatched prompts, for KTO's KL estimate.
- **Per-token inputs** — what the loss reads besides the sequence log-probs: per-token
  log-probs (`needs_token_logps`) and the per-token entropy of the policy (`needs_token_entropy`).

Notation: `c`, `r` are the policy log-probs of the chosen and rejected responses (summed over
response tokens), `c_ref`, `r_ref` the same under the reference; `ρ_w = c − c_ref`,
`ρ_l = r − r_ref`, `Δ = ρ_w − ρ_l`; `ρ = log π − log π_ref` of one response (unpaired);
`|y|` a response's length in tokens, `c̄ = c/|y_w|`, `r̄ = r/|y_l|`, `Δ̄ = ρ_w/|y_w| − ρ_l/|y_l|`;
`σ` the sigmoid, `sg` stop-gradient, `s = ±1` the label of an unpaired response.

"""


def loss_table() -> str:
    """The Markdown table of every loss in ``ALL_LOSSES``, followed by the modifier list."""
    lines = [_table_line(COLUMNS), _table_line(["---"] * len(COLUMNS))]
    lines += [_table_line(_row(cls)) for cls in ALL_LOSSES]
    return "\n".join(lines) + "\n\n" + _modifier_notes()


METRICS = """
## Logged metrics

As in TRL, whatever the loss, so that dashboards of the two tools compare
(`lit_align/records.py`):

- `rewards/chosen`, `rewards/rejected`: mean implicit reward `β·ρ` of the chosen and rejected
  responses, with `ρ = log π − log π_ref` **summed** over the response tokens (`β·log π` for
  reference-free losses); β is the loss's `beta` (1 for losses without one).
- `rewards/margins`, `rewards/accuracies`: paired data, the mean over pairs of chosen minus
  rejected reward, and the fraction of pairs where it is positive. Unpaired data (KTO, BCO,
  BNF, SFT on unpaired rows): `rewards/chosen` and `rewards/rejected` are the mean rewards of the
  desirable and undesirable rows and `rewards/margins` is their difference (as TRL's KTO logs
  it); desirable and undesirable rows are unrelated, so there is no accuracy.
- `logps/chosen`, `logps/rejected`: mean **summed** policy log-probs of the responses.
- `logratios/margins`: mean `Δ = ρ_w − ρ_l` in nats, independent of β.
- A loss whose own rewards are on another scale logs them under its own namespace,
  `<loss>/rewards/chosen|rejected|margins|accuracies`: per-token means (`simpo/`, `orpo/`,
  `sft/`, `ipo/` with `normalize='mean'`), an f-divergence score or LD-DPO's weighting
  (`dpo/`, `spo/`, … when the modifier is on). Its other metrics use the same namespace
  (`spo/z_mean`, `bnf/weight_mean`, …).
"""

SPO_RUN = """
## SPO on real data

SPO's gradient with respect to the margin is bounded for every input:
`|∂ℓ/∂Δ| = (β/2)·|g'(z)| ≤ β/2`, DPO's gradient at `Δ = 0` and half DPO's supremum β (the
`SPO` docstring derives it). Its defaults (β = 0.1, `target_reward_gap = 1`, score gaps divided
by their running positive mean) were checked on the UltraFeedback excerpt shipped in
`tests/data/ultrafeedback` (scores 1–10; ties and identical pairs included) against DPO at the
same β and learning rate, from one start: a Llama of width 32 and 2 layers over SmolLM2's
49,152-token vocabulary, first fine-tuned for 30 SFT steps on the chosen responses; then 60
AdamW steps at lr 3e-3, batches of 8 pairs, 96 tokens per sequence. Gradient norms are
pre-clip; margins are the mean `Δ` of the step's batch; held-out accuracy is the fraction of the
59 usable held-out pairs with `Δ > 0`:

```bash
python -m lit_align.losses.stability --data tests/data/ultrafeedback            # β = 0.1
python -m lit_align.losses.stability --data tests/data/ultrafeedback --beta 1.0
```

| β = 0.1 | max grad norm | final / max margin Δ (nats) | target Δr/β | held-out accuracy |
|---|---|---|---|---|
| DPO | 25.9 | 34.5 / 62.5 | — | 0.41 |
| SPO | 13.1 | 17.6 / 49.5 | 9.9 | 0.53 |
{beta_one}
The previous SPO (exponential core continued linearly below `z = −10`, unnormalised score gaps)
on the same run at β = 0.1: max gradient norm 3.21e3, final margin 16.1 nats, held-out accuracy
0.39.

On the quickstart's embedded task (`lit-align fit --config configs/quickstart.yaml`, from the
SFT export of `configs/quickstart_sft.yaml`; DPO with `--model.loss DPO --model.loss.beta 0.1`;
then `lit-align eval --config configs/quickstart_eval.yaml`), same lr 1e-4:

| run | max grad norm | held-out reward accuracy | win rate vs SFT (200 prompts) |
|---|---|---|---|
| SPO, β = 0.1 | 2.19 | 96.5 % | 56.8 % [49.8, 63.4] |
| DPO, β = 0.1 | 3.64 | 89.5 % | 52.0 % [45.1, 58.8] |
| previous SPO, β = 1 | 15.8 | 99.5 % | 60.0 % [53.1, 66.5] |

`tests/losses/test_spo_real.py`
checks a smaller run of the same harness (SPO's max gradient norm within 1.5× DPO's, its margin
near its target while DPO's keeps growing).
"""
BETA_ONE_ROWS = """
| β = 1 | max grad norm | final / max margin Δ (nats) | target Δr/β | held-out accuracy |
|---|---|---|---|---|
| DPO | 747 | 12.6 / 43.8 | — | 0.42 |
| SPO | 150 | 19.2 / 34.6 | 1.0 | 0.51 |

At β = 1 SPO overshoots its 1-nat target: above the target its restoring gradient is at most
`(β/2)·e^{−2}`, so a margin pushed past it by the optimizer's momentum returns slowly.
"""


def render_page() -> str:
    """The whole of ``docs/losses.md``: the header, :func:`loss_table`, the metric meanings and
    the SPO run."""
    return HEADER + loss_table() + METRICS + SPO_RUN.format(beta_one=BETA_ONE_ROWS)


def _table_line(cells) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _row(cls: type[PreferenceLoss]) -> list[str]:
    cells = [f"`{cls.__name__}`", f"`{cls.formula}`", _hyperparameters(cls), _link_arxiv(cls.paper)]
    if _is_composite(cls):
        return cells + [
            "if a component needs one",
            "what all components support",
            "what any component needs",
        ]
    caps = cls().capabilities()  # the defaults' capabilities
    return cells + [_yes_no(caps["requires_reference"]), _data(caps), _token_inputs(caps)]


def _is_composite(cls: type[PreferenceLoss]) -> bool:
    """True for a loss built from other losses (an argument typed ``list[PreferenceLoss]``):
    its capabilities are those of its components, set per instance."""
    hints = get_type_hints(cls.__init__)
    return any(PreferenceLoss in get_args(hint) for hint in hints.values())


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _data(caps: dict[str, bool]) -> str:
    layouts = {(True, True): "both", (True, False): "paired", (False, True): "unpaired"}
    data = layouts[(caps["supports_paired"], caps["supports_unpaired"])]
    return data + " + KL rows" if caps["needs_kl_rows"] else data


def _token_inputs(caps: dict[str, bool]) -> str:
    inputs = [
        name
        for name, flag in (
            ("log-probs", caps["needs_token_logps"]),
            ("entropy", caps["needs_token_entropy"]),
        )
        if flag
    ]
    return ", ".join(inputs) or "—"


def _link_arxiv(paper: str) -> str:
    return re.sub(r"arXiv (\d{4}\.\d{4,5})", r"arXiv [\1](https://arxiv.org/abs/\1)", paper)


# --------------------------------------------------------------------------- hyper-parameters
def _parameters(init) -> list[inspect.Parameter]:
    """Named parameters of an ``__init__`` (no ``self``, no ``*args`` / ``**kwargs``)."""
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    params = list(inspect.signature(init).parameters.values())[1:]
    return [p for p in params if p.kind not in kinds]


def _takes_modifiers(cls: type[PreferenceLoss]) -> bool:
    """True when the constructor is MarginLoss's or forwards ``**modifiers`` to it."""
    if not issubclass(cls, MarginLoss):
        return False
    params = inspect.signature(cls.__init__).parameters.values()
    forwards = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return cls.__init__ is MarginLoss.__init__ or forwards


def modifier_parameters() -> list[inspect.Parameter]:
    """The parameters of ``MarginLoss.__init__`` that its subclasses forward as ``**modifiers``:
    all those that no forwarding subclass in ``ALL_LOSSES`` names itself (i.e. not ``beta``)."""
    named = {
        p.name
        for cls in ALL_LOSSES
        if _takes_modifiers(cls) and cls.__init__ is not MarginLoss.__init__
        for p in _parameters(cls.__init__)
    }
    return [p for p in _parameters(MarginLoss.__init__) if p.name not in named]


def _format(param: inspect.Parameter) -> str:
    if param.default is inspect.Parameter.empty:
        return f"`{param.name}` (required)"
    return f"`{param.name}={param.default!r}`"


def _hyperparameters(cls: type[PreferenceLoss]) -> str:
    takes_modifiers = _takes_modifiers(cls)
    modifiers = {p.name for p in modifier_parameters()} if takes_modifiers else set()
    own = [p for p in _parameters(cls.__init__) if p.name not in modifiers]
    cells = [_format(p) for p in own] or ["—"]
    if takes_modifiers:
        cells.append(_modifier_cell(accepted_modifiers(cls)))
    return ", ".join(cells)


def _modifier_cell(accepted: list[str]) -> str:
    if not accepted:
        return "no modifiers"
    if len(accepted) == len(MODIFIER_SWITCHES):
        return "+ [modifiers](#modifiers)"
    return "+ [modifiers](#modifiers): only " + ", ".join(f"`{name}`" for name in accepted)


def accepted_modifiers(cls: type[MarginLoss]) -> list[str]:
    """The modifiers ``cls`` accepts with its other arguments at their defaults (some losses
    reject those that do not apply to them, raising :class:`LossConfigError`)."""
    accepted = []
    for name, value in MODIFIER_SWITCHES.items():
        try:
            cls(**{name: value})
        except LossConfigError:
            continue
        accepted.append(name)
    return accepted


def _modifier_notes() -> str:
    """The ``Modifiers`` section: each modifier with its default and the MarginLoss docstring."""
    docs = _arg_docs(MarginLoss)
    lines = [
        "### Modifiers",
        "",
        'Arguments of every loss marked "+ modifiers" (the reference-based paired losses, '
        "`MarginLoss` subclasses), set as `--model.loss.<name>`. A loss that cannot apply one "
        "lists those it accepts with its other arguments at their defaults, and rejects the "
        "others with an error naming the flag.",
        "",
    ]
    hints = get_type_hints(MarginLoss.__init__)
    for param in modifier_parameters():
        hint = hints.get(param.name)
        choices = get_args(hint) if get_origin(hint) is Literal else ()
        options = f" One of {', '.join(f'`{c}`' for c in choices)}." if choices else ""
        lines.append(f"- {_format(param)}: {docs.get(param.name, '')}{options}")
    for name, value in MODIFIER_SWITCHES.items():
        caps = MarginLoss(**{name: value}).capabilities()
        if caps["needs_token_logps"]:
            lines += ["", f"Setting `{name}` makes the loss read per-token log-probs."]
        if caps["needs_token_entropy"]:
            lines += [
                "",
                f"Setting `{name}` makes the loss read the policy's per-token entropy "
                "and `log Σ_v π(v)²` (`needs_token_entropy`).",
            ]
    return "\n".join(lines) + "\n"


def _arg_docs(cls: type) -> dict[str, str]:
    """``{argument: description}`` from the ``Args:`` section of a Google-style docstring,
    with reStructuredText literals turned into Markdown code."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Args:\n", 1)[1] if "Args:\n" in doc else ""
    docs: dict[str, str] = {}
    name = None
    for line in section.splitlines():
        match = re.match(r"    (\w+): (.*)", line)
        if match:
            name, text = match.groups()
            docs[name] = text
        elif line.startswith("        ") and name is not None:
            docs[name] += " " + line.strip()
        else:
            break
    return {key: value.replace("``", "`") for key, value in docs.items()}


# ------------------------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    """Write ``docs/losses.md`` (or check it is up to date with ``--check``); the exit status."""
    parser = argparse.ArgumentParser(description="Generate the loss table of docs/losses.md.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="the file to write")
    args = parser.parse_args(argv)
    page = render_page()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
        if current != page:
            print(
                f"{args.output} is out of date: run `python -m lit_align.docs`",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
