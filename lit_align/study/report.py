"""The study report: a Markdown table, findings in words, and plots on shared axes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from lit_align.eval.winrate import mean_std  # noqa: E402
from lit_align.study.metrics import CURVES, RunStats  # noqa: E402

COLUMNS = (
    "loss",
    "win vs SFT",
    "win vs DPO",
    "reward acc",
    "Δ final (nats)",
    "Δ max (nats)",
    "reward margin final",
    "target",
    "Δ logp chosen",
    "Δ logp rejected",
    "grad norm mean",
    "grad norm max",
    "events",
)


def cell(values: Sequence[float | int | None], pct: bool = False) -> str:
    """``mean`` (one seed) or ``mean ± std`` (several); ``n/a`` when nothing was measured."""
    known = [float(v) for v in values if v is not None]
    if not known:
        return "n/a"
    mean, std = mean_std(known)
    scale, fmt = (100.0, "{:.1f}%") if pct else (1.0, "{:.3g}")
    text = fmt.format(mean * scale)
    return text if len(known) == 1 else f"{text} ± {fmt.format(std * scale)}"


def table(stats: dict[str, list[RunStats]], wins: dict[str, dict[str, list[float]]]) -> str:
    """Markdown table, one row per loss; each cell aggregates the seeds."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for loss, runs in stats.items():
        row = [
            loss,
            cell(wins[loss].get("SFT", []), pct=True),
            cell(wins[loss].get("DPO", []), pct=True) if loss != "DPO" else "—",
            cell([r.reward_accuracy for r in runs], pct=True),
            cell([r.logratio_final for r in runs]),
            cell([r.logratio_max for r in runs]),
            cell([r.margin_final for r in runs]),
            cell([r.target_final for r in runs]),
            cell([r.chosen_drift for r in runs]),
            cell([r.rejected_drift for r in runs]),
            cell([r.grad_norm_mean for r in runs]),
            cell([r.grad_norm_max for r in runs]),
            cell([r.events for r in runs]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def findings(stats: dict[str, list[RunStats]], wins: dict[str, dict[str, list[float]]]) -> str:
    """The questions the seed papers argue about, answered from the numbers above (seed means)."""
    first = {loss: _mean_stats(runs) for loss, runs in stats.items()}
    lines = []
    if "SPO" in first and "DPO" in first:
        spo, dpo = first["SPO"], first["DPO"]
        lines.append(
            f"- Log-ratio margin Δ: DPO ended at {dpo.logratio_final:.3g} nats (max "
            f"{dpo.logratio_max:.3g}), SPO at {spo.logratio_final:.3g} (max "
            f"{spo.logratio_max:.3g}); SPO's reward margin ended at {spo.margin_final:.3g} against "
            f"its target {spo.target_final or float('nan'):.3g}."
        )
    for loss in ("BNF", "DPO"):
        if loss in first:
            drift = first[loss].chosen_drift
            verb = "rose" if drift >= 0 else "fell"
            lines.append(f"- {loss}: the chosen log-prob {verb} by {abs(drift):.3g} nats.")
    ranked = sorted(wins, key=lambda k: -cell_mean(wins[k].get("SFT", [])))
    if ranked:
        best = ranked[0]
        lines.append(
            f"- Highest win rate against SFT: {best} ({cell(wins[best]['SFT'], pct=True)})."
        )
    return "\n".join(lines)


def _mean_stats(runs: list[RunStats]) -> RunStats:
    """Field-wise mean over seeds (None where any seed has None)."""
    values = {}
    for name in RunStats.__dataclass_fields__:
        column = [getattr(r, name) for r in runs]
        values[name] = None if None in column else sum(column) / len(column)
    return RunStats(**values)


def cell_mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("-inf")


def plot_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], out_dir: str) -> list[str]:
    """One PNG per curve (margin, chosen/rejected log-prob, grad norm), every loss on it."""
    paths = []
    for tag in CURVES:
        fig, ax = plt.subplots(figsize=(7, 4))
        for loss, series in curves.items():
            points = series.get(tag, [])
            if not points:  # e.g. no log-ratio margin for reference-free losses
                continue
            ax.plot([s for s, _ in points], [v for _, v in points], label=loss, linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel(tag)
        ax.set_title(f"{tag} (seed of the first run)")
        ax.legend()
        ax.grid(alpha=0.3)
        path = os.path.join(out_dir, tag.replace("/", "_") + ".png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
