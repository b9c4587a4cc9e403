"""Study figures: win rates with Wilson error bars, and training curves with the raw per-step
values faint under an exponential moving average; gradient norms on a log scale with the clip
line. Needs matplotlib (``pip install 'lit_align[study]'``)."""

from __future__ import annotations

import os

from lit_align.eval.winrate import WinRate

CURVES = ("logratios/margins", "logps/chosen", "logps/rejected", "grad_norm")
"""Plotted tags; margins in the β-free log-ratio Δ (nats), the one unit shared by all losses."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(
            "the study report draws figures with matplotlib: pip install 'lit_align[study]'"
        ) from err
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def ema(values: list[float], weight: float = 0.9) -> list[float]:
    """Debiased exponential moving average (TensorBoard's smoothing): ``s_t = w s_{t-1} +
    (1 - w) x_t`` divided by ``1 - w^t``, so the first points are not pulled towards 0."""
    out, state = [], 0.0
    for t, value in enumerate(values, start=1):
        state = weight * state + (1 - weight) * value
        out.append(state / (1 - weight**t))
    return out


def plot_win_rates(rates: dict[str, dict[str, WinRate]], out_dir: str) -> str:
    """Bars of each loss's win rate per opponent with 95% Wilson error bars; 50% dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    opponents = sorted({o for per in rates.values() for o in per}, key=["SFT", "DPO"].index)
    width = 0.8 / max(len(opponents), 1)
    for j, opponent in enumerate(opponents):
        names = [n for n in rates if opponent in rates[n]]
        xs = [list(rates).index(n) + (j - (len(opponents) - 1) / 2) * width for n in names]
        w = [rates[n][opponent] for n in names]
        errors = [[r.rate - r.low for r in w], [r.high - r.rate for r in w]]
        ax.bar(xs, [r.rate for r in w], width, yerr=errors, capsize=3, label=f"vs {opponent}")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(rates)), list(rates))
    ax.set_ylim(0, 1)
    ax.set_ylabel("win rate (ties half), 95% Wilson interval")
    ax.legend()
    return _save(fig, plt, out_dir, "win_rates.png")


def plot_curves(
    curves: dict[str, dict[str, list[tuple[int, float]]]], out_dir: str, clip: float | None
) -> list[str]:
    """One PNG per tag of :data:`CURVES`, every loss on it (raw faint, EMA solid)."""
    plt = _pyplot()
    paths = []
    for tag in CURVES:
        fig, ax = plt.subplots(figsize=(7, 4))
        for loss, series in curves.items():
            points = series.get(tag, [])
            if not points:  # no log-ratio margin for reference-free losses
                continue
            steps, values = [s for s, _ in points], [v for _, v in points]
            (line,) = ax.plot(steps, ema(values), label=loss, linewidth=1.5)
            ax.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=0.8)
        if tag == "grad_norm":
            ax.set_yscale("log")
            if clip:
                ax.axhline(clip, color="black", linestyle=":", label=f"clip {clip:g}")
        ax.set_xlabel("step")
        ax.set_ylabel(tag + (" (nats)" if tag != "grad_norm" else " (pre-clip)"))
        ax.set_title(f"{tag}: EMA 0.9, raw values faint (first seed)")
        ax.legend()
        ax.grid(alpha=0.3)
        paths.append(_save(fig, plt, out_dir, tag.replace("/", "_") + ".png"))
    return paths


def _save(fig, plt, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
