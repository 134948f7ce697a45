"""The temporal section's figures: dynamic correlations, trajectories, autocorrelation,
example patients and stay lengths, real beside synthetic."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.cohort import Cohort
from .figures import MAX_PAGES, PANELS_PER_PAGE, heatmap, new_figure, page_name, paginate
from .temporal import nan_mean, nan_std, panel, time_like


def plot_dynamic_correlations(result: dict[str, Any]) -> Any | None:
    """Trend and cycle correlation heatmaps, real vs synthetic (None without 2 dynamic reals)."""
    corr = result["dynamic_correlations"]
    real, synth = corr["real"], corr["synthetic"]
    n = len(real["trend"])
    if n < 2:
        return None
    side = max(3.6, 0.25 * n + 1.6)
    fig, axes = new_figure(4, ncols=2, size=(side + 0.6, side))
    for row, which in enumerate(("trend", "cycle")):
        heatmap(axes[2 * row], real[which], f"{which}: real", -1, "RdBu_r")
        image = heatmap(axes[2 * row + 1], synth[which], f"{which}: synthetic", -1, "RdBu_r")
    fig.colorbar(image, ax=axes, shrink=0.6)
    fig.suptitle("Dynamic correlations (Fisher-z pooled over patients)")
    return fig


def plot_trajectories(real: Cohort, synth: Cohort) -> dict[str, Any]:
    """Mean +- SD per step of each dynamic real, real vs synthetic, in grid pages."""
    names = [v.name for v in real.schema.dynamic if v.kind == "real"]
    figures = {}
    for i, page in enumerate(paginate(names)):
        fig, axes = new_figure(len(page))
        xr, xs = panel(real, page), panel(synth, page)
        for j, (ax, name) in enumerate(zip(axes, page, strict=True)):
            for x, label, color in ((xr, "real", "C0"), (xs, "synthetic", "C1")):
                mean, sd = nan_mean(x[:, :, j], axis=0), nan_std(x[:, :, j], axis=0)
                steps = np.arange(len(mean))
                ax.plot(steps, mean, color=color, label=label)
                ax.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.2)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step", fontsize=8)
        axes[0].legend(fontsize=8)
        fig.suptitle("Trajectories: mean +- SD per step")
        figures[page_name("trajectories", i)] = fig
    return figures


def plot_autocorrelation(result: dict[str, Any]) -> Any | None:
    """Per dynamic real, lag-1 autocorrelation pooled over patients and within patients: real
    vs synthetic (a line between them is the gap); None without a dynamic real or lag."""
    per = {n: p for n, p in result["trajectories"].items() if "lag1" in p}
    if not per:
        return None
    names = list(per)[: PANELS_PER_PAGE * MAX_PAGES]
    fig, axes = new_figure(2, ncols=2, size=(4.2, max(2.4, 0.28 * len(names) + 1.0)))
    y = np.arange(len(names))[::-1]
    for ax, key, title in (
        (axes[0], "lag1", "lag-1, pooled over patients"),
        (axes[1], "within_lag1", "lag-1, within patients"),
    ):
        r = np.array([per[n][key]["real"] for n in names], dtype=float)
        s = np.array([per[n][key]["synthetic"] for n in names], dtype=float)
        ax.hlines(y, np.fmin(r, s), np.fmax(r, s), color="0.7", linewidth=2)
        ax.plot(r, y, "o", color="C0", label="real")
        ax.plot(s, y, "D", color="C1", label="synthetic")
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlim(min(-0.05, np.nanmin(np.r_[r, s, 0]) - 0.05), 1.02)
        ax.axvline(0, color="0.85", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("autocorrelation (rank-scaled)", fontsize=8)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Persistence: lag-1 autocorrelation per variable")
    return fig


def plot_patients(
    real: Cohort, synth: Cohort, n: int = 5, max_variables: int = 6, seed: int = 0
) -> Any | None:
    """A few real and synthetic patients side by side: one row per variable (time-like
    variables first, then the most observed dynamic reals), real left, synthetic right, on
    shared axes; patients drawn (seeded) among the longer stays. None without a dynamic real."""
    schema = real.schema
    reals = [v.name for v in schema.dynamic if v.kind == "real"]
    if not reals:
        return None
    directions, _ = time_like(real)
    observed = real.table[reals].notna().mean()
    names = sorted(reals, key=lambda m: (m not in directions, -observed[m], reals.index(m)))
    names = names[:max_variables]
    rng = np.random.default_rng(seed)
    fig, axes = new_figure(2 * len(names), ncols=2, size=(4.6, 1.9))
    for col, (cohort, label) in enumerate(((real, "real"), (synth, "synthetic"))):
        x = panel(cohort, names)
        lengths = cohort.lengths.to_numpy()
        pool = np.flatnonzero(lengths >= np.median(lengths))
        pick = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
        for row, name in enumerate(names):
            ax = axes[2 * row + col]
            for k, p in enumerate(pick):
                xs = x[p, :, row]
                steps = np.flatnonzero(np.isfinite(xs))
                ax.plot(steps, xs[steps], "-o", color=f"C{k}", markersize=2.5, linewidth=1)
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.tick_params(labelsize=7)
    for row in range(len(names)):  # shared value axis per variable
        left, right = axes[2 * row], axes[2 * row + 1]
        lo = min(left.get_ylim()[0], right.get_ylim()[0])
        hi = max(left.get_ylim()[1], right.get_ylim()[1])
        left.set_ylim(lo, hi)
        right.set_ylim(lo, hi)
    axes[-1].set_xlabel("step", fontsize=8)
    axes[-2].set_xlabel("step", fontsize=8)
    fig.suptitle(f"{n} real and {n} synthetic patients (observed steps joined)")
    return fig


def plot_lengths(real: Cohort, synth: Cohort) -> Any:
    """Share of patients by number of steps, real vs synthetic."""
    fig, (ax,) = new_figure(1, size=(6, 3.2))
    for lengths, label, shift in ((real.lengths, "real", -0.2), (synth.lengths, "synthetic", 0.2)):
        share = lengths.value_counts(normalize=True).sort_index()
        ax.bar(share.index.to_numpy() + shift, share.to_numpy(), width=0.4, label=label)
    ax.set_xlabel("steps per patient")
    ax.set_ylabel("share of patients")
    ax.legend(fontsize=8)
    ax.set_title("Sequence lengths")
    return fig
