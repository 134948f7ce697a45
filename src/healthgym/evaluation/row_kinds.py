"""Rows of different kinds: does the synthetic table only hold rows of the kinds the real
table has, each where the real table has it?

A row's **pattern** is which dynamic variables it holds (present or missing) and the level of
each binary dynamic variable (its flags); real tables of events (a dose row, a sample row, an
outcome row that ends the stay) hold few patterns, and a generator that mixes them makes
patterns that never occur. Pooled marginals do not see it. Every figure has its holdout
baseline: real patients the generator never saw, read against the same training rows.

- Unseen patterns: the share of synthetic rows whose pattern no real row has
  (`unseen_pattern_share`), minus the holdout's (`unseen_pattern_excess`, the reading), and
  the total variation between the two pattern distributions (`pattern_tv`).
- Never together: items are "variable present" and "variable = level" (binary/categorical);
  a pair of items of different variables is exclusive when the schema's `rows` block says so
  or no real row holds both although independence would put at least `MIN_EXPECTED` real
  rows there (`data.row_rules.exclusive_pairs`). `never_together_share`: the share of
  synthetic rows holding an exclusive pair.
- Terminal kinds: a pattern that real stays (at least `data.row_rules.MIN_STAYS`) have only
  as their last row (or only as their first), e.g. an outcome row;
  `terminal_misplaced_share`: the share of synthetic rows of such patterns that are not where
  the real table always has them.
- Per-kind marginals: rows grouped by which variables they hold (kinds with at least
  `MIN_KIND_SHARE` of the real rows); per kind, 1 - KS of each real variable it holds, over
  that kind's rows only; `per_kind_ks_gap`: the pooled KS complement of the same variables
  minus the per-kind one (a model that mixes kinds scores well pooled and worse per kind);
  small kinds make the per-kind KS noisier, so the reading is the gap minus the holdout's
  (`per_kind_ks_gap_excess`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from ..data import row_rules
from ..data.cohort import Cohort
from ..data.row_rules import exclusive_pairs, holds, positions, row_patterns
from .figures import new_figure

MIN_EXPECTED = 10.0
MIN_KIND_SHARE = 0.05
#: Patterns shown in the figure, and named in the metrics.
TOP_PATTERNS = 12


def row_kind_metrics(real: Cohort, synth: Cohort, holdout: Cohort | None = None) -> dict[str, Any]:
    """The figures of the module docstring (holdout baselines where a holdout is given)."""
    r_pat, s_pat = patterns(real), patterns(synth)
    seen = set(r_pat)
    out: dict[str, Any] = {"patterns_real": len(seen)}
    out["unseen_pattern_share"] = float(np.mean([p not in seen for p in s_pat]))
    out["pattern_tv"] = _tv(r_pat, s_pat)
    pairs = list(dict.fromkeys([*exclusive_pairs(real.table, real.schema, MIN_EXPECTED),
                                *real.schema.rows.exclusive]))  # fmt: skip
    out["exclusive_pairs"] = [f"{a} & {b}" for a, b in pairs]
    out["never_together_share"] = _together_share(synth, pairs)
    terminal = terminal_patterns(real)
    out["terminal_patterns"] = {p: where for p, where in terminal.items()}
    out["terminal_misplaced_share"] = _misplaced(synth, s_pat, terminal)
    kinds = per_kind_ks(real, synth)
    out |= kinds
    if holdout is not None:
        h_pat = patterns(holdout)
        out["holdout_unseen_pattern_share"] = float(np.mean([p not in seen for p in h_pat]))
        out["unseen_pattern_excess"] = (
            out["unseen_pattern_share"] - out["holdout_unseen_pattern_share"]
        )
        out["holdout_pattern_tv"] = _tv(r_pat, h_pat)
        out["holdout_never_together_share"] = _together_share(holdout, pairs)
        out["holdout_terminal_misplaced_share"] = _misplaced(holdout, h_pat, terminal)
        gap = per_kind_ks(real, holdout).get("per_kind_ks_gap")
        if gap is not None and "per_kind_ks_gap" in out:
            out["holdout_per_kind_ks_gap"] = gap
            out["per_kind_ks_gap_excess"] = out["per_kind_ks_gap"] - gap
    top = pd.Series(r_pat).value_counts(normalize=True).head(TOP_PATTERNS)
    synth_share = pd.Series(s_pat).value_counts(normalize=True)
    out["top_patterns"] = {
        p: {"real": float(v), "synthetic": float(synth_share.get(p, 0.0))} for p, v in top.items()
    }
    return out


def patterns(cohort: Cohort) -> np.ndarray:
    """Each row's pattern (`data.row_rules.row_patterns`) as text: its items joined by `, `
    (`-` for a row that holds none)."""
    return np.array([", ".join(p) or "-" for p in row_patterns(cohort.table, cohort.schema)])


def _together_share(cohort: Cohort, pairs: list[tuple[str, str]]) -> float:
    """Share of rows holding both items of any pair."""
    hit = np.zeros(len(cohort.table), dtype=bool)
    for a, b in pairs:
        hit |= holds(cohort.table, cohort.schema, a) & holds(cohort.table, cohort.schema, b)
    return float(hit.mean())


def terminal_patterns(real: Cohort) -> dict[str, str]:
    """Patterns real stays (>= `data.row_rules.MIN_STAYS`) have only as their last ("last") or
    first row."""
    found = row_rules.terminal_patterns(real.table, real.schema)
    return {", ".join(p) or "-": where for p, where in found.items()}


def _misplaced(cohort: Cohort, pats: np.ndarray, terminal: dict[str, str]) -> float:
    """Share of the rows of terminal patterns that are not where the real table has them."""
    if not terminal:
        return 0.0
    first, last = positions(cohort.table, cohort.schema)
    where = pd.Series(pats).map(terminal).to_numpy()
    of_kind = pd.notna(where)
    if not of_kind.any():
        return 0.0
    wrong = ((where == "last") & ~last) | ((where == "first") & ~first)
    return float(wrong[of_kind].mean())


def per_kind_ks(real: Cohort, synth: Cohort) -> dict[str, Any]:
    """Per row kind (which variables present), 1 - KS of each real variable it holds."""
    reals = [v.name for v in real.schema.dynamic if v.kind == "real"]
    if not reals:
        return {"kinds": {}}
    r_kind, s_kind = (_presence(c, reals) for c in (real, synth))
    shares = pd.Series(r_kind).value_counts(normalize=True)
    kinds, per_kind, pooled = {}, [], []
    whole: dict[str, float] = {}  # each variable's pooled KS complement, computed once
    for kind, share in shares[shares >= MIN_KIND_SHARE].items():
        held = [n for n in reals if n in kind.split(", ")]
        scores = {}
        for name in held:
            a = real.table[name].to_numpy(float)[r_kind == kind]
            b = synth.table[name].to_numpy(float)[s_kind == kind]
            b = b[np.isfinite(b)]
            scores[name] = 1.0 - float(ks_2samp(a, b).statistic) if len(b) else 0.0
            if name not in whole:
                whole_a = real.table[name].dropna().to_numpy(float)
                whole_b = synth.table[name].dropna().to_numpy(float)
                whole[name] = (
                    1.0 - float(ks_2samp(whole_a, whole_b).statistic) if len(whole_b) else 0.0
                )
            pooled.append(whole[name])
            per_kind.append(scores[name])
        kinds[kind] = {
            "real_share": float(share),
            "synthetic_share": float(np.mean(s_kind == kind)),
            "ks_complement": scores,
        }
    if not per_kind:
        return {"kinds": kinds}
    return {
        "kinds": kinds,
        "per_kind_ks_complement": float(np.mean(per_kind)),
        "pooled_ks_complement": float(np.mean(pooled)),
        "per_kind_ks_gap": float(np.mean(pooled) - np.mean(per_kind)),
    }


def _presence(cohort: Cohort, names: list[str]) -> np.ndarray:
    present = [np.where(cohort.table[n].notna().to_numpy(), n, "") for n in names]
    return np.array([", ".join(x for x in row if x) or "-" for row in zip(*present, strict=True)])


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    pa = pd.Series(a).value_counts(normalize=True)
    pb = pd.Series(b).value_counts(normalize=True)
    both = pa.index.union(pb.index)
    return 0.5 * float(
        (pa.reindex(both, fill_value=0) - pb.reindex(both, fill_value=0)).abs().sum()
    )


def plot_row_patterns(metrics: dict[str, Any]) -> Any:
    """Bars: the share of rows of each of the real table's most common patterns, real vs
    synthetic, and the synthetic rows of patterns the real table never has."""
    top = metrics.get("top_patterns") or {}
    if not top:
        return None
    fig, axes = new_figure(1, ncols=1, size=(10.0, 0.45 * len(top) + 1.6))
    ax = axes[0]
    labels = [p if len(p) <= 60 else p[:57] + "..." for p in top]
    labels.append("(patterns never in the real table)")
    real = [v["real"] for v in top.values()] + [0.0]
    synth = [v["synthetic"] for v in top.values()] + [metrics["unseen_pattern_share"]]
    y = np.arange(len(labels))
    ax.barh(y - 0.2, real, height=0.4, label="real")
    ax.barh(y + 0.2, synth, height=0.4, label="synthetic")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of rows", fontsize=8)
    ax.legend(fontsize=8)
    fig.suptitle("Row patterns: which variables a row holds, and its flags")
    return fig
