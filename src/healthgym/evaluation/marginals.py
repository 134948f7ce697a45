"""Marginal fidelity: does each variable on its own look like the real one?

Static variables are compared one value per patient (their first step; drift within a patient
is measured in `structure`), dynamic variables over all rows.

- KS complement (reals): `1 - scipy.stats.ks_2samp(real, synthetic).statistic`, in [0, 1],
  1 when the empirical distributions coincide.
- TV complement (binary/categorical): `1 - 0.5 * sum |p_real - p_synth|` over the level
  shares of present values, in [0, 1], 1 when the shares coincide.
- Wasserstein (reals): `scipy.stats.wasserstein_distance` in original units, and divided by
  the real interquartile range (the real SD when the IQR is 0) so variables are comparable;
  0 is ideal, 0.1 means the mass moves a tenth of an IQR on average.
- Missing-rate difference: |share missing in real - share missing in synthetic|, 0 ideal;
  also per step of stay (dynamic variables with `missing: flag`, steps both cohorts reach),
  mean and max over (step, variable) cells: missingness often depends on the step.

A variable with no present values on one side scores complement 0 and Wasserstein NaN.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..data.cohort import Cohort, level_codes
from ..data.schema import Variable
from .figures import new_figure, page_name, paginate

#: Points per KDE fit; larger samples are subsampled (shape, not precision, is the point).
KDE_POINTS = 3000


def variable_values(cohort: Cohort, v: Variable) -> pd.Series:
    """One value per patient for statics, every row for dynamics."""
    if v.role == "static":
        return cohort.static_table()[v.name]
    return cohort.table[v.name]


def level_shares(values: pd.Series, v: Variable) -> np.ndarray:
    """Share of each schema level among present values (zeros when none is present)."""
    codes = level_codes(values, v.levels)
    counts = np.bincount(codes[codes >= 0], minlength=len(v.levels)).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def compare_variable(real: pd.Series, synth: pd.Series, v: Variable) -> dict[str, float]:
    """The marginal metrics of one variable (see the module docstring)."""
    out = {"missing_rate_diff": abs(float(real.isna().mean()) - float(synth.isna().mean()))}
    if v.kind == "real":
        r, s = real.dropna().to_numpy(float), synth.dropna().to_numpy(float)
        if len(r) == 0 or len(s) == 0:
            return out | {"ks_complement": 0.0, "wasserstein": np.nan, "wasserstein_scaled": np.nan}
        w = float(stats.wasserstein_distance(r, s))
        q75, q25 = np.percentile(r, [75, 25])
        scale = float(q75 - q25) or float(np.std(r)) or 1.0
        return out | {
            # The statistic only: "asymp" skips the exact p-value (up to 1 s a variable).
            "ks_complement": 1.0 - float(stats.ks_2samp(r, s, method="asymp").statistic),
            "wasserstein": w,
            "wasserstein_scaled": w / scale,
        }
    p, q = level_shares(real, v), level_shares(synth, v)
    tv = 0.5 * float(np.abs(p - q).sum()) if p.sum() and q.sum() else 1.0
    return out | {"tv_complement": 1.0 - tv}


def marginal_metrics(real: Cohort, synth: Cohort) -> dict[str, Any]:
    """Per-variable marginal metrics and their means across variables."""
    per = {
        v.name: compare_variable(variable_values(real, v), variable_values(synth, v), v)
        for v in real.schema.variables
    }

    def mean(key: str) -> float:
        vals = [m[key] for m in per.values() if key in m and np.isfinite(m[key])]
        return float(np.mean(vals)) if vals else np.nan

    return {
        "ks_complement_mean": mean("ks_complement"),
        "tv_complement_mean": mean("tv_complement"),
        "wasserstein_scaled_mean": mean("wasserstein_scaled"),
        "missing_rate_diff_mean": mean("missing_rate_diff"),
        **_missing_by_step_diff(real, synth),
        "per_variable": per,
    }


def missing_by_step(cohort: Cohort) -> pd.DataFrame:
    """Share missing per step of stay (rows 0, 1, ...) of each flagged dynamic variable."""
    table = cohort.table
    step = table.groupby(cohort.schema.id, sort=False).cumcount().to_numpy()
    names = [v.name for v in cohort.schema.dynamic if v.missing == "flag"]
    return table[names].isna().groupby(step).mean()


def _missing_by_step_diff(real: Cohort, synth: Cohort) -> dict[str, float]:
    r, s = missing_by_step(real), missing_by_step(synth)
    gap = (r - s).abs().dropna(how="all").to_numpy()  # steps both reach
    if gap.size == 0:
        return {"missing_rate_step_diff_mean": np.nan, "missing_rate_step_diff_max": np.nan}
    return {
        "missing_rate_step_diff_mean": float(np.nanmean(gap)),
        "missing_rate_step_diff_max": float(np.nanmax(gap)),
    }


def plot_marginals(real: Cohort, synth: Cohort) -> dict[str, Any]:
    """Grid pages of density (reals, KDE) and level-share bars (categoricals)."""
    figures = {}
    for i, page in enumerate(paginate(real.schema.variables)):
        fig, axes = new_figure(len(page))
        for ax, v in zip(axes, page, strict=True):
            r, s = variable_values(real, v), variable_values(synth, v)
            if v.kind == "real":
                _density(ax, r, s)
            else:
                _bars(ax, r, s, v)
            ax.set_title(f"{v.name} ({v.role})", fontsize=10)
        axes[0].legend(fontsize=8)
        fig.suptitle("Marginal distributions: real vs synthetic")
        figures[page_name("marginals", i)] = fig
    return figures


def _density(ax: Any, real: pd.Series, synth: pd.Series) -> None:
    rng = np.random.default_rng(0)
    samples = [x.dropna().to_numpy(float) for x in (real, synth)]
    present = [x for x in samples if len(x)]
    if not present:
        return
    lo, hi = min(x.min() for x in present), max(x.max() for x in present)
    pad = 0.05 * (hi - lo) or 1.0
    grid = np.linspace(lo - pad, hi + pad, 200)
    for x, label, color in zip(samples, ("real", "synthetic"), ("C0", "C1"), strict=True):
        if len(x) > KDE_POINTS:
            x = rng.choice(x, KDE_POINTS, replace=False)
        try:
            ax.plot(grid, stats.gaussian_kde(x)(grid), color=color, label=label)
        except (ValueError, np.linalg.LinAlgError):  # constant or too few values
            if len(x):
                ax.hist(x, bins=20, density=True, alpha=0.5, color=color, label=label)
    ax.set_yticks([])


def _bars(ax: Any, real: pd.Series, synth: pd.Series, v: Variable) -> None:
    x = np.arange(len(v.levels))
    ax.bar(x - 0.2, level_shares(real, v), width=0.4, label="real")
    ax.bar(x + 0.2, level_shares(synth, v), width=0.4, label="synthetic")
    labels = [str(lv)[:12] for lv in v.levels]
    ax.set_xticks(x, labels, rotation=90 if len(v.levels) > 4 else 0, fontsize=7)
    ax.set_ylabel("share", fontsize=8)
