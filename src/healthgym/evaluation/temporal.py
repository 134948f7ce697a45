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
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..cohort import Cohort, level_codes
from .associations import mean_abs_upper
from .figures import heatmap, new_figure, page_name, paginate

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
        centred = x - _nanmean(x, axis=1)[:, None]
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
    u0 = np.where(m, u - _nanmean(np.where(m, u, np.nan), axis=1)[:, None], 0)
    v0 = np.where(m, v - _nanmean(np.where(m, v, np.nan), axis=1)[:, None], 0)
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


def temporal_metrics(real: Cohort, synth: Cohort, lags: int = 3) -> dict[str, Any]:
    """Every temporal metric (see the module docstring)."""
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
    return {
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
    }


def _length_stats(lengths: np.ndarray) -> dict[str, float]:
    return {"mean": float(lengths.mean()), "min": int(lengths.min()), "max": int(lengths.max())}


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
                mean, sd = _nanmean(x[:, :, j], axis=0), _nanstd(x[:, :, j], axis=0)
                steps = np.arange(len(mean))
                ax.plot(steps, mean, color=color, label=label)
                ax.fill_between(steps, mean - sd, mean + sd, color=color, alpha=0.2)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step", fontsize=8)
        axes[0].legend(fontsize=8)
        fig.suptitle("Trajectories: mean +- SD per step")
        figures[page_name("trajectories", i)] = fig
    return figures


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


def _varies(centred_ss: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Per patient: is the spread more than rounding noise relative to the values' size?"""
    raw_ss = (np.where(m, x, 0) ** 2).sum(1)
    return (centred_ss > 0) & (centred_ss > 1e-12 * raw_ss)


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without its warning on all-NaN slices (common: patients past their stay)."""
    n = np.isfinite(x).sum(axis)
    total = np.where(np.isfinite(x), x, 0).sum(axis)
    return np.divide(total, n, out=np.full(total.shape, np.nan), where=n > 0)


def _nanstd(x: np.ndarray, axis: int) -> np.ndarray:
    mean = np.expand_dims(_nanmean(x, axis), axis)
    return np.sqrt(_nanmean((x - mean) ** 2, axis))
