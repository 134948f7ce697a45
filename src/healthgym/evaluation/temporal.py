"""Temporal fidelity: within-patient dynamics, Health Gym's dynamic correlations, lengths.

- Lag-k autocorrelation (dynamic reals, k = 1..`lags`, capped by the shorter cohort's longest
  stay): each patient's series is centred on its own mean, then Pearson r of the pooled
  (x_t, x_{t+k}) pairs. Centring removes between-patient differences in level, so the number
  measures how a patient's values follow each other, not how patients differ.
  Categoricals (binary included) use the lag-k agreement instead: the share of present
  (x_t, x_{t+k}) pairs with the same level. Summary: mean |real - synthetic| over variables
  and lags, 0 ideal, range [0, 2].
- Dynamic correlations (Health Gym 2025, dynamic reals): per patient and variable, a
  least-squares line over the observed steps (trend) and the residual (cycle); per pair of
  variables and patient, Pearson r of the trends and of the cycles over the steps where both
  are observed, skipped with fewer than 3 points or zero variance; pooled over patients with
  Fisher z, `tanh(sum w atanh(r) / sum w)`, w = n - 3 (patients with exactly 3 points get
  weight 0), r clipped to +-`CLIP`. Both trends are straight lines in time, so a patient's
  trend r is +-1 (do the slopes agree in sign?) and the clip sets how far pooled trend
  correlations saturate. Summary: mean |real - synthetic| above the diagonal, 0 ideal.
- Transitions (dynamic binary/categorical): the matrix P[i, j] = share of steps in level i
  followed by level j. Per variable, the total variation 0.5 * sum_j |P_real - P_synth| of
  each row the real data visits, averaged with the real row frequencies as weights; a row
  the synthetic data never visits counts as 1. Range [0, 1], 0 ideal.
- Sequence lengths: 1 - KS statistic of steps per patient, 1 ideal.
- Trajectories (`trajectory_stats`, per dynamic variable, real vs synthetic; "gap" is
  |real - synthetic|, mean over variables):
  - pooled lag-k autocorrelation (reals): Pearson r of all (x_t, x_t+k) pairs of observed
    steps, patients not centred, so it is high when values persist and patients differ
    (`lag1_gap_mean`; lags 2..k: `lagk_gap_mean`); within-patient lag-1 (patient mean
    removed, as above: `within_lag1_gap_mean`). Both on rank-scaled values (`rank_scale`:
    each value's mid-rank CDF among the real values), so a few extreme values do not decide
    them (real halves of the demo cohort: urine's Pearson lag-1 differs by 0.18, its
    rank-scaled one by 0.005);
  - step-to-step changes (reals): the KS statistic of real vs synthetic deltas x_t+1 - x_t over
    consecutive observed steps (`delta_ks_mean`, 0 ideal);
  - persistence (every dynamic variable): among patients with >= 2 observed values, the share
    whose values never change and the share whose values change at every observed step
    (`never_change_gap_mean`, `every_change_gap_mean`);
  - time-like variables (declared `monotone`, or monotone in every real patient): the share of
    synthetic consecutive observed values that go backwards (`backwards_share`; 0 in real
    data); variables whose every real patient starts at one value (declared `start`, or
    found): the share of synthetic patients whose first step is not that value
    (`start_mismatch_share`, a missing first value counts);
  - with a holdout, the same gaps of the real holdout (`reference`) and the synthetic gap
    minus the holdout's (`lag1_gap_excess`, `within_lag1_gap_excess`: <= 0 means "as close
    to the training patients' dynamics as unseen real patients are").
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..data import constraints
from ..data.cohort import Cohort, level_codes
from .associations import mean_abs_upper

#: |r| is clipped to this before atanh, so perfectly (anti)correlated patients stay finite.
CLIP = 0.999
MIN_POINTS = 3


def panel(cohort: Cohort, names: list[str]) -> np.ndarray:
    """(patients, longest stay, variables) floats: reals as values, categoricals as level
    codes; NaN where missing or after a patient's last step."""
    table, schema = cohort.table, cohort.schema
    patient, _ = pd.factorize(table[schema.id])
    step = table.groupby(schema.id, sort=False).cumcount().to_numpy()
    out = np.full((patient.max() + 1, step.max() + 1, len(names)), np.nan)
    for j, name in enumerate(names):
        v = schema[name]
        if v.kind == "real":
            values = table[name].to_numpy(float)
        else:
            codes = level_codes(table[name], v.levels).astype(float)
            values = np.where(codes >= 0, codes, np.nan)
        out[patient, step, j] = values
    return out


def autocorrelation(x: np.ndarray, lag: int, categorical: bool) -> float:
    """Lag agreement (categorical) or within-patient lag autocorrelation of (patients, steps)."""
    a, b = x[:, :-lag], x[:, lag:]
    if not categorical:
        centred = x - nan_mean(x, axis=1)[:, None]
        a, b = centred[:, :-lag], centred[:, lag:]
    m = np.isfinite(a) & np.isfinite(b)
    if m.sum() < MIN_POINTS:
        return np.nan
    a, b = a[m], b[m]
    if categorical:
        return float(np.mean(a == b))
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def trend_and_cycle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per patient, the least-squares line over observed steps and the residual; x is
    (patients, steps) with NaN where unobserved (both outputs NaN there too)."""
    obs = np.isfinite(x)
    t = np.broadcast_to(np.arange(x.shape[1], dtype=float), x.shape)
    n = np.maximum(obs.sum(1, keepdims=True), 1)
    t_mean = np.where(obs, t, 0).sum(1, keepdims=True) / n
    x_mean = np.where(obs, x, 0).sum(1, keepdims=True) / n
    dt = np.where(obs, t - t_mean, 0)
    stt = (dt**2).sum(1, keepdims=True)
    stx = (dt * np.where(obs, x - x_mean, 0)).sum(1, keepdims=True)
    slope = np.divide(stx, stt, out=np.zeros_like(stt), where=stt > 0)
    trend = np.where(obs, x_mean + slope * (t - t_mean), np.nan)
    return trend, x - trend


def pooled_correlation(u: np.ndarray, v: np.ndarray, clip: float = CLIP) -> float:
    """Per-patient Pearson r of u and v over steps where both exist, Fisher-z pooled with
    weights n - 3; NaN when no patient has weight."""
    m = np.isfinite(u) & np.isfinite(v)
    n = m.sum(1)
    u0 = np.where(m, u - nan_mean(np.where(m, u, np.nan), axis=1)[:, None], 0)
    v0 = np.where(m, v - nan_mean(np.where(m, v, np.nan), axis=1)[:, None], 0)
    suu, svv, suv = (u0**2).sum(1), (v0**2).sum(1), (u0 * v0).sum(1)
    ok = (n >= MIN_POINTS) & _varies(suu, u, m) & _varies(svv, v, m)
    if not ok.any():
        return np.nan
    r = np.clip(suv[ok] / np.sqrt(suu[ok] * svv[ok]), -clip, clip)
    w = n[ok] - 3.0
    if w.sum() == 0:
        return np.nan
    return float(np.tanh((w * np.arctanh(r)).sum() / w.sum()))


def dynamic_correlations(x: np.ndarray, names: list[str]) -> dict[str, pd.DataFrame]:
    """Trend and cycle correlation matrices of the (patients, steps, variables) panel `x`."""
    parts = [trend_and_cycle(x[:, :, j]) for j in range(len(names))]
    out = {}
    for which, k in (("trend", 0), ("cycle", 1)):
        mat = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
        for i, j in combinations(range(len(names)), 2):
            r = pooled_correlation(parts[i][k], parts[j][k])
            mat.iloc[i, j] = mat.iloc[j, i] = r
        out[which] = mat
    return out


def transition_matrix(codes: np.ndarray, k: int) -> np.ndarray:
    """Counts of level i followed by level j at the next step; codes is (patients, steps)."""
    a, b = codes[:, :-1], codes[:, 1:]
    m = np.isfinite(a) & np.isfinite(b)
    flat = a[m].astype(int) * k + b[m].astype(int)
    return np.bincount(flat, minlength=k * k).reshape(k, k).astype(float)


def transition_tv(real_counts: np.ndarray, synth_counts: np.ndarray) -> float:
    """Row-frequency-weighted total variation between two transition count matrices."""
    rows_r, rows_s = real_counts.sum(1), synth_counts.sum(1)
    if rows_r.sum() == 0:
        return np.nan
    p = real_counts / np.maximum(rows_r, 1)[:, None]
    q = synth_counts / np.maximum(rows_s, 1)[:, None]
    tv = np.where(rows_s > 0, 0.5 * np.abs(p - q).sum(1), 1.0)
    return float((tv * rows_r).sum() / rows_r.sum())


def pooled_autocorrelation(x: np.ndarray, lag: int) -> float:
    """Pearson r of the (x_t, x_t+lag) pairs of all patients, not centred per patient;
    x is (patients, steps) with NaN where unobserved."""
    a, b = x[:, :-lag], x[:, lag:]
    m = np.isfinite(a) & np.isfinite(b)
    if m.sum() < MIN_POINTS:
        return np.nan
    a, b = a[m], b[m]
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def step_deltas(x: np.ndarray) -> np.ndarray:
    """x_t+1 - x_t over consecutive steps both observed, all patients."""
    d = x[:, 1:] - x[:, :-1]
    return d[np.isfinite(d)]


def observed_pairs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous, next, patient) of each patient's consecutive observed values (gaps skipped)."""
    flat = x.ravel()
    rows = np.flatnonzero(np.isfinite(flat))
    patient = rows // x.shape[1]
    same = patient[1:] == patient[:-1]
    return flat[rows[:-1]][same], flat[rows[1:]][same], patient[1:][same]


def change_shares(x: np.ndarray) -> dict[str, float]:
    """Among patients with >= 2 observed values: the share whose values never change and the
    share whose values change at every observed step."""
    prev, nxt, patient = observed_pairs(x)
    pairs = np.bincount(patient, minlength=len(x))
    changes = np.bincount(patient, weights=prev != nxt, minlength=len(x))
    has = pairs > 0
    if not has.any():
        return {"never": np.nan, "every": np.nan}
    return {
        "never": float(np.mean(changes[has] == 0)),
        "every": float(np.mean(changes[has] == pairs[has])),
    }


def backwards_share(x: np.ndarray, direction: str) -> float:
    """Share of consecutive observed values that move against `direction`."""
    prev, nxt, _ = observed_pairs(x)
    if len(prev) == 0:
        return np.nan
    return float(np.mean(nxt < prev if direction == "increasing" else nxt > prev))


def start_mismatch(x: np.ndarray, start: float) -> float:
    """Share of patients whose first step is not `start` (missing counts as not)."""
    return float(np.mean(~(x[:, 0] == start)))


def time_like(real: Cohort) -> tuple[dict[str, str], dict[str, float]]:
    """Dynamic variables with a direction (declared, else monotone in every real patient) and
    with a common start (declared, else shared by every real patient), the start as it sits
    in `panel` (a value, or a level code)."""
    table, schema = real.table, real.schema
    directions, starts = {}, {}
    for v in schema.dynamic:
        way = constraints.direction(table, schema.id, v)
        if way is not None:
            directions[v.name] = way
        start = v.start
        if start is None:
            start = constraints.propose(table, schema.id, v).get("start")
        if start is not None:
            starts[v.name] = float(start) if v.kind == "real" else float(v.levels.index(start))
    return directions, starts


def rank_scale(reference: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each value's mid-rank empirical CDF among the observed `reference` values (0 below the
    smallest, 1 above the largest; NaN stays NaN): autocorrelations of these are Spearman-like,
    so a few extreme values (urine output, creatinine) do not decide them."""
    ref = np.sort(reference[np.isfinite(reference)])
    if len(ref) == 0:
        return np.full(x.shape, np.nan)
    lo, hi = np.searchsorted(ref, x, "left"), np.searchsorted(ref, x, "right")
    return np.where(np.isfinite(x), (lo + hi) / (2.0 * len(ref)), np.nan)


def trajectory_stats(
    x: np.ndarray,
    variables: list[Any],
    lags: int,
    directions: dict[str, str],
    starts: dict[str, float],
    reference: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Per variable of the (patients, steps, variables) panel `x`: the trajectory statistics
    of the module docstring for one cohort (reals also lag1..lag<lags>, within_lag1 and the
    deltas). Autocorrelations are of `rank_scale(reference, x)`, `reference` the real panel
    (default: `x` itself)."""
    reference = x if reference is None else reference
    out = {}
    for j, v in enumerate(variables):
        xj = x[:, :, j]
        stats_j: dict[str, Any] = {}
        if v.kind == "real":
            u = rank_scale(reference[:, :, j], xj)
            for k in range(1, lags + 1):
                stats_j[f"lag{k}"] = pooled_autocorrelation(u, k)
            stats_j["within_lag1"] = autocorrelation(u, 1, False) if lags else np.nan
            stats_j["deltas"] = step_deltas(xj)
        shares = change_shares(xj)
        stats_j["never_change"], stats_j["every_change"] = shares["never"], shares["every"]
        if v.name in directions:
            stats_j["backwards"] = backwards_share(xj, directions[v.name])
        if v.name in starts:
            stats_j["start_mismatch"] = start_mismatch(xj, starts[v.name])
        out[v.name] = stats_j
    return out


def trajectory_gaps(real: dict, other: dict, lags: int) -> dict[str, Any]:
    """Per-variable and mean gaps between the trajectory statistics of two cohorts."""
    per: dict[str, dict[str, Any]] = {}
    for name, r in real.items():
        o = other[name]
        row: dict[str, Any] = {}
        for key in [f"lag{k}" for k in range(1, lags + 1)] + [
            "within_lag1",
            "never_change",
            "every_change",
        ]:
            if key in r:
                row[key] = {"real": r[key], "synthetic": o[key], "gap": abs(r[key] - o[key])}
        if "deltas" in r:
            enough = min(len(r["deltas"]), len(o["deltas"])) >= MIN_POINTS
            row["delta_ks"] = (
                float(stats.ks_2samp(r["deltas"], o["deltas"], method="asymp").statistic)
                if enough
                else np.nan
            )
        for key in ("backwards", "start_mismatch"):
            if key in r:
                row[key] = {"real": r[key], "synthetic": o[key]}
        per[name] = row

    def mean(values: list[float]) -> float | None:
        values = [v for v in values if np.isfinite(v)]
        return float(np.mean(values)) if values else np.nan

    def gaps(key: str) -> list[float]:
        return [row[key]["gap"] for row in per.values() if key in row]

    reals = [row for row in per.values() if "within_lag1" in row]
    lagk = [row[f"lag{k}"]["gap"] for row in reals for k in range(2, lags + 1)]
    back = [row["backwards"]["synthetic"] for row in per.values() if "backwards" in row]
    start = [row["start_mismatch"]["synthetic"] for row in per.values() if "start_mismatch" in row]
    return {
        "lag1_gap_mean": mean(gaps("lag1")) if reals else None,
        "lagk_gap_mean": mean(lagk) if reals and lags >= 2 else None,
        "within_lag1_gap_mean": mean(gaps("within_lag1")) if reals else None,
        "delta_ks_mean": mean([row["delta_ks"] for row in reals]) if reals else None,
        "never_change_gap_mean": mean(gaps("never_change")) if per else None,
        "every_change_gap_mean": mean(gaps("every_change")) if per else None,
        "backwards_share": mean(back) if back else None,
        "start_mismatch_share": mean(start) if start else None,
        "per_variable": per,
    }


def temporal_metrics(
    real: Cohort, synth: Cohort, lags: int = 3, holdout: Cohort | None = None
) -> dict[str, Any]:
    """Every temporal metric (see the module docstring); `holdout` adds the real holdout's
    trajectory gaps as a reference."""
    dyn = list(real.schema.dynamic)
    names = [v.name for v in dyn]
    reals = [v.name for v in dyn if v.kind == "real"]
    xr, xs = panel(real, names), panel(synth, names)
    max_lag = min(lags, xr.shape[1] - 1, xs.shape[1] - 1)
    auto: dict[str, Any] = {}
    for j, v in enumerate(dyn):
        cat = v.kind != "real"
        auto[v.name] = {
            f"lag{k}": {
                "real": autocorrelation(xr[:, :, j], k, cat),
                "synthetic": autocorrelation(xs[:, :, j], k, cat),
            }
            for k in range(1, max_lag + 1)
        }
    gaps = [abs(d["real"] - d["synthetic"]) for per in auto.values() for d in per.values()]
    gaps = [g for g in gaps if np.isfinite(g)]
    idx = [names.index(n) for n in reals]
    dyn_r = dynamic_correlations(xr[:, :, idx], reals)
    dyn_s = dynamic_correlations(xs[:, :, idx], reals)
    transitions = {}
    for j, v in enumerate(dyn):
        if v.kind != "real":
            cr = transition_matrix(xr[:, :, j], len(v.levels))
            cs = transition_matrix(xs[:, :, j], len(v.levels))
            transitions[v.name] = {"tv": transition_tv(cr, cs), "real": cr, "synthetic": cs}
    tvs = [t["tv"] for t in transitions.values() if np.isfinite(t["tv"])]
    len_r, len_s = real.lengths.to_numpy(), synth.lengths.to_numpy()
    directions, starts = time_like(real)
    stats_r = trajectory_stats(xr, dyn, max_lag, directions, starts)
    stats_s = trajectory_stats(xs, dyn, max_lag, directions, starts, xr)
    traj = trajectory_gaps(stats_r, stats_s, max_lag)
    if holdout is not None:
        xh = panel(holdout, names)
        ref_lag = min(max_lag, xh.shape[1] - 1)
        stats_h = trajectory_stats(xh, dyn, ref_lag, directions, starts, xr)
        ref = trajectory_gaps(stats_r, stats_h, ref_lag)
        traj["reference"] = {k: v for k, v in ref.items() if k != "per_variable"}
        for key in ("lag1_gap", "within_lag1_gap"):
            synth_gap, ref_gap = traj[f"{key}_mean"], ref[f"{key}_mean"]
            traj[f"{key}_excess"] = None if synth_gap is None else synth_gap - ref_gap
    trajectories = traj.pop("per_variable")
    return {
        **traj,
        "lags": max_lag,
        "autocorrelation_mad": float(np.mean(gaps)) if gaps else np.nan,
        "trend_corr_mad": mean_abs_upper(dyn_r["trend"], dyn_s["trend"]),
        "cycle_corr_mad": mean_abs_upper(dyn_r["cycle"], dyn_s["cycle"]),
        "transition_tv_mean": float(np.mean(tvs)) if tvs else np.nan,
        "length_ks_complement": 1.0 - float(stats.ks_2samp(len_r, len_s, method="asymp").statistic),
        "autocorrelation": auto,
        "dynamic_correlations": {"real": dyn_r, "synthetic": dyn_s},
        "transitions": transitions,
        "lengths": {"real": _length_stats(len_r), "synthetic": _length_stats(len_s)},
        "trajectories": trajectories,
        "time_like": {"monotone": directions, "start": starts},
    }


def _length_stats(lengths: np.ndarray) -> dict[str, float]:
    return {"mean": float(lengths.mean()), "min": int(lengths.min()), "max": int(lengths.max())}


def _varies(centred_ss: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per patient: is the spread more than rounding noise relative to the values' size?"""
    raw_ss = (np.where(m, x, 0) ** 2).sum(1)
    return (centred_ss > 0) & (centred_ss > 1e-12 * raw_ss)


def nan_mean(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without its warning on all-NaN slices (common: patients past their stay)."""
    n = np.isfinite(x).sum(axis)
    total = np.where(np.isfinite(x), x, 0).sum(axis)
    return np.divide(total, n, out=np.full(total.shape, np.nan), where=n > 0)


def nan_std(x: np.ndarray, axis: int) -> np.ndarray:
    mean = np.expand_dims(nan_mean(x, axis), axis)
    return np.sqrt(nan_mean((x - mean) ** 2, axis))
