"""Pairwise associations over rows (all steps, statics repeated), real vs synthetic.

The published code takes Pearson correlations of category codes, which depend on an arbitrary
level order. Here each pair gets the measure its kinds call for:

- real x real: Pearson r, in [-1, 1];
- categorical x categorical (binary included): Cramer's V
  (`scipy.stats.contingency.association`), in [0, 1];
- real x categorical: the correlation ratio eta = sqrt(between-level SS / total SS), in [0, 1].

Each pair uses the rows where both are present. A pair with fewer than 3 such rows is
undefined (NaN, left out of means); a pair where either side is constant scores 0 (no
association can be measured). The summary is the mean |real - synthetic| over the pairs above
the diagonal: 0 is ideal; its range is [0, 2] for Pearson pairs and [0, 1] otherwise.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats.contingency import association

from ..data.cohort import Cohort, level_codes
from .figures import heatmap, new_figure

MIN_PAIRS = 3


def association_matrix(cohort: Cohort) -> pd.DataFrame:
    """The mixed-type association matrix of a cohort's variables over its rows."""
    schema = cohort.schema
    names = schema.names
    columns = {}
    for v in schema.variables:
        col = cohort.table[v.name]
        columns[v.name] = col.to_numpy(float) if v.kind == "real" else level_codes(col, v.levels)
    out = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b in combinations(schema.variables, 2):
        x, y = columns[a.name], columns[b.name]
        if a.kind == "real" and b.kind == "real":
            value = _pearson(x, y)
        elif a.kind != "real" and b.kind != "real":
            value = _cramers_v(x, y, len(a.levels), len(b.levels))
        elif a.kind == "real":
            value = _eta(x, y, len(b.levels))
        else:
            value = _eta(y, x, len(a.levels))
        out.loc[a.name, b.name] = out.loc[b.name, a.name] = value
    return out


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    m = np.isfinite(x) & np.isfinite(y)
    if m.sum() < MIN_PAIRS:
        return np.nan
    x, y = x[m], y[m]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _cramers_v(x: np.ndarray, y: np.ndarray, kx: int, ky: int) -> float:
    m = (x >= 0) & (y >= 0)
    if m.sum() < MIN_PAIRS:
        return np.nan
    table = np.bincount(x[m] * ky + y[m], minlength=kx * ky).reshape(kx, ky)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    if min(table.shape) < 2:
        return 0.0
    return float(association(table, method="cramer"))


def _eta(x: np.ndarray, codes: np.ndarray, k: int) -> float:
    m = np.isfinite(x) & (codes >= 0)
    if m.sum() < MIN_PAIRS:
        return np.nan
    x, codes = x[m], codes[m]
    total = float(((x - x.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    n = np.bincount(codes, minlength=k)
    means = np.bincount(codes, weights=x, minlength=k) / np.maximum(n, 1)
    between = float((n * (means - x.mean()) ** 2).sum())
    return float(np.sqrt(min(1.0, between / total)))


def mean_abs_upper(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Mean |a - b| above the diagonal, NaN pairs left out (NaN when none is left)."""
    iu = np.triu_indices(len(a), k=1)
    diff = np.abs(a.to_numpy(float) - b.to_numpy(float))[iu]
    diff = diff[np.isfinite(diff)]
    return float(diff.mean()) if len(diff) else np.nan


def association_metrics(real: Cohort, synth: Cohort) -> dict[str, Any]:
    """Real and synthetic association matrices and their mean absolute difference."""
    r, s = association_matrix(real), association_matrix(synth)
    return {"mean_abs_diff": mean_abs_upper(r, s), "real": r, "synthetic": s}


def plot_associations(result: dict[str, Any]) -> Any:
    """Heatmaps: real | synthetic | synthetic - real."""
    real, synth = result["real"], result["synthetic"]
    n = len(real)
    fig, axes = new_figure(3, ncols=3, size=(max(4.0, 0.22 * n + 2), max(3.6, 0.22 * n + 1.6)))
    heatmap(axes[0], real, "real", -1, "RdBu_r")
    image = heatmap(axes[1], synth, "synthetic", -1, "RdBu_r")
    fig.colorbar(image, ax=axes[:2], shrink=0.7)
    image = heatmap(axes[2], synth - real, "synthetic - real", -1, "PuOr_r")
    fig.colorbar(image, ax=axes[2], shrink=0.7)
    fig.suptitle("Associations over rows (Pearson, Cramer's V, correlation ratio)")
    return fig
