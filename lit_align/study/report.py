"""The study report: a Markdown table with intervals, findings that say what is inside the noise,
and plots (win rates with error bars; smoothed curves over faint raw values).

Every win rate pools the judged outcomes of all seeds (ties count half) and carries its 95%
Wilson interval and W/T/L counts; the held-out reward accuracy is a pooled proportion with its
Wilson interval; every other number is a mean over seeds with a 95% t interval (none for a
single seed).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from lit_align.eval.winrate import WinRate
from lit_align.study.judge import StudyJudge
from lit_align.study.metrics import RunStats
from lit_align.study.stats import overlap, pooled, proportion, t_interval

COLUMNS = (
    "loss",
    "win vs SFT",
    "win vs DPO",
    "held-out reward acc",
    "Δ final (nats)",
    "Δ max (nats)",
    "SPO target",
    "Δ logp chosen",
    "Δ logp rejected",
    "grad norm mean",
    "grad norm max",
    "events",
    "wall time (s)",
)


@dataclass(frozen=True)
class LossResults:
    """Everything measured for one loss, over seeds.

    Attributes:
        runs: training statistics of each seed's run.
        wins: opponent (``SFT``, ``DPO``) → each seed's judged outcomes.
        accuracy: each seed's ``(pairs with ρ_w > ρ_l, pairs)`` on held-out data.
        wall_time: each seed's training wall time in seconds.
    """

    runs: list[RunStats]
    wins: dict[str, list[list[float]]]
    accuracy: list[tuple[int, int]]
    wall_time: list[float]

    def win(self, opponent: str) -> WinRate | None:
        """Pooled win rate against ``opponent``, or None when it was not judged."""
        outcomes = self.wins.get(opponent) or []
        return pooled(outcomes) if any(outcomes) else None

    def heldout_accuracy(self) -> WinRate:
        """Held-out reward accuracy pooled over seeds, with its Wilson interval."""
        return proportion(sum(c for c, _ in self.accuracy), sum(n for _, n in self.accuracy))


def interval_text(w: WinRate | None, counts: bool = True) -> str:
    """``62.5% [51.5, 72.3] 45/10/25 W/T/L`` (``n/a`` when not measured)."""
    if w is None:
        return "n/a"
    text = f"{w.rate:.1%} [{w.low:.1%}, {w.high:.1%}]"
    return f"{text} {w.wins:g}/{w.ties:g}/{w.losses:g}" if counts else f"{text} (n={w.n})"


def cell(values: Sequence[float | int | None]) -> str:
    """``mean`` (one seed) or ``mean ± 95% t half-width`` over seeds; ``n/a`` when unmeasured."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return "n/a"
    mean, half = t_interval(known)
    return f"{mean:.3g}" if half is None else f"{mean:.3g} ± {half:.2g}"


def table(results: dict[str, LossResults]) -> str:
    """Markdown table, one row per loss."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for loss, r in results.items():
        runs = r.runs
        row = [
            loss,
            interval_text(r.win("SFT")),
            interval_text(r.win("DPO")) if loss != "DPO" else "—",
            interval_text(r.heldout_accuracy(), counts=False),
            cell([s.logratio_final for s in runs]),
            cell([s.logratio_max for s in runs]),
            cell([s.target_final for s in runs]),
            cell([s.chosen_drift for s in runs]),
            cell([s.rejected_drift for s in runs]),
            cell([s.grad_norm_mean for s in runs]),
            cell([s.grad_norm_max for s in runs]),
            cell([s.events for s in runs]),
            cell(r.wall_time),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ranking(name: str, rates: dict[str, WinRate]) -> str:
    """The best of ``rates`` and which others are inside the noise of it (intervals overlap)."""
    if not rates:
        return f"- {name}: not measured."
    best = max(rates, key=lambda k: rates[k].rate)
    tied = [k for k in rates if k != best and overlap(rates[k], rates[best])]
    apart = [k for k in rates if k != best and k not in tied]
    line = f"- {name}: highest {best} ({interval_text(rates[best], counts=False)})"
    if tied:
        line += f"; {', '.join(tied)} within its 95% interval, so those differences are noise"
    if apart:
        line += f"; {', '.join(apart)} clearly below"
    return line + "."


def findings(results: dict[str, LossResults], clip: float | None) -> str:
    """What the numbers support, and what they do not."""
    wins = {k: w for k, r in results.items() if (w := r.win("SFT")) is not None}
    lines = [
        ranking("Win rate against SFT", wins),
        ranking("Held-out reward accuracy", {k: r.heldout_accuracy() for k, r in results.items()}),
    ]
    means = {k: _means(r.runs) for k, r in results.items()}
    if "SPO" in means and "DPO" in means:
        spo, dpo = means["SPO"], means["DPO"]
        lines.append(
            f"- Log-ratio margin Δ (nats): DPO ended at {dpo['logratio_final']:.3g} (max "
            f"{dpo['logratio_max']:.3g}), SPO at {spo['logratio_final']:.3g} (max "
            f"{spo['logratio_max']:.3g}), SPO's target {spo['target_final'] or float('nan'):.3g}."
        )
    for loss in ("BNF", "DPO"):
        if loss in means:
            drift = means[loss]["chosen_drift"]
            verb = "rose" if drift >= 0 else "fell"
            lines.append(f"- {loss}: the chosen log-prob {verb} by {abs(drift):.3g} nats.")
    if clip and means:
        loud = max(means, key=lambda k: means[k]["grad_norm_mean"])
        ratio = means[loud]["grad_norm_mean"] / clip
        lines.append(
            f"- Gradient norms: {loud}'s mean pre-clip norm is {ratio:.3g}× the clip value "
            f"{clip:g} (log scale in grad_norm.png)."
        )
    return "\n".join(lines)


def _means(runs: list[RunStats]) -> dict[str, float | None]:
    """Field-wise mean over seeds (None where any seed has None)."""
    out = {}
    for name in RunStats.__dataclass_fields__:
        column = [getattr(r, name) for r in runs]
        out[name] = None if None in column else sum(column) / len(column)
    return out


def judge_section(judge: StudyJudge, dataset: str) -> str:
    """``## Judge``: which reward model judged, what it was trained on, and how well it ranks
    the held-out pairs (empty for other judges)."""
    if judge.kind != "reward_model":
        return ""
    if judge.trained_on is None:
        about = f"The reward model {judge.model!r}, given ready (not trained by this study)."
    else:
        command = shlex.join(["lit-align", "fit", "--config", judge.config, *judge.args])
        policies = "; ".join(dict.fromkeys(d.describe() for d in judge.policies_trained_on))
        about = (
            f"A reward model the study trained once (seed {judge.seed}, {judge.wall_time:.0f} s) "
            f"with `{command}` on {judge.trained_on.describe()}: a split disjoint from the "
            f"policies' training data ({policies}), no prompt shared by prompt text or "
            "prompt_id (checked before training)."
        )
    correct, n = judge.accuracy
    accuracy = interval_text(proportion(correct, n), counts=False)
    return (
        f"## Judge\n\n{about} Its held-out reward accuracy on {dataset!r} (the chosen response "
        f"scored above the rejected one): {accuracy}.\n\n"
    )
