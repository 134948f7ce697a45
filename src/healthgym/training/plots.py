"""Learning-dynamics figure: losses early vs late in training, from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

#: Rows of the figure: metrics drawn together on one axis.
PANELS = (("D_loss", "G_loss"), ("D_real", "D_fake"), ("GP", "Corr"))
#: Share of steps shown in the "first" and "last" columns.
WINDOW = 0.2


def plot_learning_dynamics(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Draw each metric over generator steps for the first and last 20% of the run.

    Uses the Agg canvas directly, so it works headless and leaves pyplot's global state alone.
    """
    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f"{metrics_path} has no metrics to plot")
    k = max(1, round(len(rows) * WINDOW))
    windows = ((f"first {WINDOW:.0%} of steps", rows[:k]), (f"last {WINDOW:.0%}", rows[-k:]))

    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: matplotlib loads only
    from matplotlib.figure import Figure  # to draw, not to sample

    fig = Figure(figsize=(11, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(PANELS), len(windows), squeeze=False)
    for r, names in enumerate(PANELS):
        for c, (title, part) in enumerate(windows):
            ax = axes[r][c]
            steps = [row["step"] for row in part]
            for name in names:
                ax.plot(steps, [row[name] for row in part], lw=0.8, label=name)
            ax.set_xlabel("generator step")
            ax.legend(loc="best", fontsize=8)
            if r == 0:
                ax.set_title(title)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    return out_png


def plot_likelihood_curve(metrics_path: str | Path, out_png: str | Path) -> Path:
    """Training NLL per step, and training and validation NLL per epoch with the best (kept)
    epoch marked. The gap between the curves is the memorisation early stopping guards against.
    """
    with open(metrics_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [r for r in rows if "nll" in r]
    epochs = [r for r in rows if "val_nll" in r]
    if not rows:
        raise ValueError(f"{metrics_path} has no metrics to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = [r["step"] for r in steps]
    ax.plot(x, [r["nll"] for r in steps], color="0.75", lw=0.6, label="training (per step)")
    for key, label in (("train_nll", "training"), ("val_nll", "validation (held-out patients)")):
        ax.plot(
            [r["step"] for r in epochs], [r[key] for r in epochs], marker=".", lw=1, label=label
        )
    if epochs:
        best = min(epochs, key=lambda r: r["val_nll"])
        ax.axvline(
            best["step"], color="grey", ls="--", lw=0.8, label=f"kept: epoch {best['epoch']}"
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("negative log-likelihood per patient (nats)")
    ax.legend(loc="best", fontsize=8)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    return out_png
