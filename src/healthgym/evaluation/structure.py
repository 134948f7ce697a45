"""Structure: do synthetic patients stay coherent, and does the generator cover the modes?

- Static consistency: share of synthetic patients whose static variables never change within
  the patient (Health Gym v1 generates statics at every step, so they can drift). 1 ideal.
- Level coverage: over binary/categorical variables, the share of (variable, level) pairs
  with >= `MIN_SHARE` frequency in the real data that appear at least once in the synthetic
  data (statics counted per patient, dynamics per row). 1 ideal.
- Joint static coverage: the combinations of static binary/categorical variables (missing as
  its own value) held by >= `MIN_SHARE` of real patients; the share of them that at least one
  synthetic patient has. The mode-collapse check of the Health Gym paper (Sex x Ethnicity),
  made a number. 1 ideal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import Cohort
from .figures import new_figure
from .marginals import level_shares, variable_values

MIN_SHARE = 0.01
#: Combinations shown in the figure.
TOP_COMBINATIONS = 16


def static_consistency(synth: Cohort) -> float:
    """Share of patients whose static variables are constant (NaN without statics)."""
    names = [v.name for v in synth.schema.static]
    if not names:
        return np.nan
    distinct = synth.table.groupby(synth.schema.id, sort=False)[names].nunique(dropna=False)
    return float((distinct <= 1).all(axis=1).mean())


def level_coverage(real: Cohort, synth: Cohort) -> tuple[float, list[str]]:
    """Share of frequent real levels the synthetic data produces, and the missing ones."""
    seen, lost = 0, []
    for v in real.schema.variables:
        if v.kind == "real":
            continue
        p = level_shares(variable_values(real, v), v)
        q = level_shares(variable_values(synth, v), v)
        for level, share_r, share_s in zip(v.levels, p, q, strict=True):
            if share_r >= MIN_SHARE:
                seen += 1
                if share_s == 0:
                    lost.append(f"{v.name}={level}")
    return (1.0 - len(lost) / seen if seen else np.nan), lost


def static_combinations(cohort: Cohort, names: list[str]) -> pd.Series:
    """Share of patients per combination of the given static variables, largest first."""
    table = cohort.static_table()[names].astype(object)
    table = table.where(table.notna(), "(missing)")
    keys = table.astype(str).agg(" | ".join, axis=1)
    return keys.value_counts(normalize=True)


def structure_metrics(real: Cohort, synth: Cohort) -> dict[str, Any]:
    """Static consistency, level coverage and joint static coverage."""
    coverage, lost = level_coverage(real, synth)
    out: dict[str, Any] = {
        "static_consistency": static_consistency(synth),
        "level_coverage": coverage,
        "levels_not_generated": lost,
    }
    names = [v.name for v in real.schema.static if v.kind != "real"]
    if names:
        r, s = static_combinations(real, names), static_combinations(synth, names)
        frequent = r[r >= MIN_SHARE]
        present = frequent.index.isin(s.index)
        out |= {
            "joint_static_coverage": float(present.mean()) if len(frequent) else np.nan,
            "joint_static_variables": names,
            "joint_static_missing": frequent.index[~present].tolist(),
            "joint_static_shares": {"real": r, "synthetic": s},
        }
    return out


def plot_static_combinations(result: dict[str, Any]) -> Any | None:
    """Shares of the most common real static combinations, real vs synthetic."""
    if "joint_static_shares" not in result:
        return None
    r = result["joint_static_shares"]["real"].head(TOP_COMBINATIONS)
    s = result["joint_static_shares"]["synthetic"].reindex(r.index).fillna(0.0)
    fig, (ax,) = new_figure(1, size=(9, 0.3 * len(r) + 1.5))
    y = np.arange(len(r))
    ax.barh(y - 0.2, r.to_numpy(), height=0.4, label="real")
    ax.barh(y + 0.2, s.to_numpy(), height=0.4, label="synthetic")
    ax.set_yticks(y, [k[:60] for k in r.index], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of patients")
    ax.legend(fontsize=8)
    ax.set_title(" x ".join(result["joint_static_variables"]) + " (most common real combinations)")
    return fig
