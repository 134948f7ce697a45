"""The fidelity report's draws and comparisons (`fidelity.py`): every held-out transition's
next state drawn given the real history, with the recorded treatment and with each level set
instead, in one pass over the steps; and what those draws are compared on.

A predictor is a table of next states aligned with the held-out transitions. The simulator
is one; two baselines that a faithful simulator must beat are others: history-blind (each
next state a held-out next state drawn at random: no history, no treatment) and
treatment-blind (the same model with the treatments it reads shuffled among the patients at
every step, or a run trained on treatments shuffled so: it cannot know who was treated).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data.cohort import Cohort
from ..models.healthgym.row_mask import RowMask
from ..models.healthgym.sampler import StepDrawer

#: The issue's tolerance: a simulated difference agrees within this share of the observed.
TOLERANCE = 0.25
#: Transitions per treatment level below which a difference is not compared.
MIN_TRANSITIONS = 100
BOOTSTRAP = 200


@dataclass
class Transitions:
    """The held-out transitions: each one's patient, recorded treatment level, current and
    real next state (state variables only)."""

    patient: np.ndarray
    level: np.ndarray
    previous: np.ndarray  # the level one step earlier (None at a stay's first step)
    now: pd.DataFrame
    next: pd.DataFrame


def transitions_of(holdout: Cohort, state: list[str], action: str) -> Transitions:
    table = holdout.table.reset_index(drop=True)
    ids = table[holdout.schema.id].to_numpy()
    rows = np.flatnonzero(np.r_[ids[1:] == ids[:-1], False])
    levels = table[action].to_numpy(dtype=object)
    first = np.r_[True, ids[1:] != ids[:-1]][rows]
    return Transitions(
        ids[rows],
        levels[rows],
        np.where(first, None, levels[np.maximum(rows - 1, 0)]),
        table.iloc[rows][state].reset_index(drop=True),
        table.iloc[rows + 1][state].reset_index(drop=True),
    )


def draw_next(
    sim: Any,
    holdout: Cohort,
    state: list[str],
    rng: torch.Generator,
    np_rng: np.random.Generator,
    scramble: bool = False,
) -> dict[str, pd.DataFrame]:
    """Next states of every held-out transition (in `transitions_of`'s order) given the real
    history: "recorded" (the recorded treatment) and, per level of the first treatment,
    "<action>=<level>" (that level set at the transition's step), from the same uniforms.
    `scramble`: every step's treatments shuffled among the patients first (treatment-blind)."""
    tok = sim.tok
    tokens = tok.transform(Cohort(holdout.table, tok.schema), seed=0, hold=sim.hold)
    static, dynamic = torch.from_numpy(tokens.static), torch.from_numpy(tokens.dynamic)
    lengths = torch.from_numpy(tokens.lengths)
    n, stop = len(static), sim.first_action_token
    if scramble:
        dynamic = dynamic.clone()
        for t in range(dynamic.shape[1]):
            dynamic[:, t, stop:] = dynamic[torch.randperm(n, generator=rng), t, stop:]
    action = sim.actions[0]
    at, codes, levels = sim.action_codes[action]
    variants: dict[str, torch.Tensor | None] = {"recorded": None}
    if not scramble:  # blind to treatment: a level set reaches it no more than the recorded
        variants |= {f"{action}={lv}": codes[k] for k, lv in enumerate(levels)}
    drawer = StepDrawer(sim.net.sequence, static, sim.temperature, RowMask.of(tok), lengths)
    out: dict[str, list[pd.DataFrame]] = {k: [] for k in variants}
    for t in range(int(lengths.max()) - 1):
        live = (lengths > t + 1).numpy()
        u = torch.rand(stop + sim.ends, n, generator=rng).double()  # shared: sharper contrasts
        for key, set_to in variants.items():
            branch, row = drawer.branch(), dynamic[:, t].clone()
            if set_to is not None:
                row[:, at : at + len(set_to)] = set_to
            branch.read(row)
            step = torch.zeros(n, dynamic.shape[2], dtype=torch.long)
            step[:, :stop] = branch.draw(u, stop)
            values = tok.decode_columns(tok.dynamic_columns, step[live].numpy(), np_rng)
            out[key].append(pd.DataFrame({k: values[k] for k in state}))
        drawer.read(dynamic[:, t])
    # drawn step by step; the transitions are patient by patient
    order = _step_major_order(tokens.lengths)
    drawn = {k: pd.concat(v, ignore_index=True).iloc[order].reset_index(drop=True)
             for k, v in out.items()}  # fmt: skip
    return drawn | {f"{action}={lv}": drawn["recorded"] for lv in levels if scramble}


def _step_major_order(lengths: np.ndarray) -> np.ndarray:
    """Positions, in a step-by-step listing of the transitions, of each transition listed
    patient by patient (a patient of length L has L - 1 transitions)."""
    steps = np.concatenate([np.arange(n - 1) for n in lengths])
    patient = np.repeat(np.arange(len(lengths)), lengths - 1)
    listed = np.lexsort((patient, steps))  # step-major listing, as drawn
    where = np.empty_like(listed)
    where[listed] = np.arange(len(listed))
    return where


def history_blind(real: Transitions, rng: np.random.Generator) -> pd.DataFrame:
    """Next states drawn at random from all held-out next states (ignores everything)."""
    return real.next.iloc[rng.integers(0, len(real.next), len(real.next))].reset_index(drop=True)


def numeric(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(pd.to_numeric, errors="coerce").astype(float)


def differences(
    real: Transitions, predicted: pd.DataFrame, levels: list[Any], seed: int = 0
) -> dict[str, dict[str, dict[str, float]]]:
    """Per state variable and level (but the first), grouped by the recorded level: the
    difference of next-step means (reals) and of next-step measurement rates against the
    first level, observed (with a 95% bootstrap interval over patients) and predicted, and
    whether they agree (the same sign, within `TOLERANCE` of the observed); where both
    groups have `MIN_TRANSITIONS`."""
    obs, pred = numeric(real.next), numeric(predicted)
    patients, inverse = np.unique(real.patient, return_inverse=True)
    resamples = np.random.default_rng(seed).integers(0, len(patients), (BOOTSTRAP, len(patients)))
    weights = np.stack([np.bincount(r, minlength=len(patients))[inverse] for r in resamples])
    out: dict[str, dict[str, dict[str, float]]] = {}
    base = real.level == levels[0]
    for name in obs.columns:
        for what, a, b in (("mean", obs[name], pred[name]), ("rate", obs[name].notna(),
                                                              pred[name].notna())):  # fmt: skip
            a, b = a.to_numpy(float), b.to_numpy(float)
            if what == "rate" and a.min() == a.max() == 1:
                continue  # always measured: no rate to compare
            for lv in levels[1:]:
                group = real.level == lv
                ok_a, ok_b = ~np.isnan(a), ~np.isnan(b)
                if min((group & ok_a).sum(), (base & ok_a).sum()) < MIN_TRANSITIONS:
                    continue
                observed = _gap(a, group, base, ok_a, None)
                boot = _gap(a, group, base, ok_a, weights)
                predicted_gap = _gap(b, group, base, ok_b, None)
                low, high = np.nanpercentile(boot, [2.5, 97.5])
                agree = np.sign(predicted_gap) == np.sign(observed) and abs(
                    predicted_gap - observed
                ) <= TOLERANCE * abs(observed)
                out.setdefault(f"{name} ({what})", {})[str(lv)] = {
                    "observed": float(observed), "low": float(low), "high": float(high),
                    "predicted": float(predicted_gap), "agrees": bool(agree),
                }  # fmt: skip
    return out


def _gap(x: np.ndarray, group: np.ndarray, base: np.ndarray, ok: np.ndarray, w: Any) -> Any:
    """mean(x | group) - mean(x | base) over `ok`; with weights (R, n), one per resample."""
    w = np.ones((1, len(x))) if w is None else w
    x0 = np.where(ok, x, 0.0)

    def mean(sel: np.ndarray) -> np.ndarray:
        ws = w * (sel & ok)
        return (ws * x0).sum(1) / np.maximum(ws.sum(1), 1e-12)

    gap = mean(group) - mean(base)
    return gap[0] if len(gap) == 1 else gap


def agreement(
    diffs: dict[str, dict[str, dict[str, float]]], what: str | None = None
) -> float | None:
    """Share of compared (variable, level) differences of `what` (mean, rate; None: both)
    that agree; of what-if differences, those the data show (`shown`)."""
    found = [d["agrees"] for k, per in diffs.items() for d in per.values()
             if (what is None or k.endswith(f"({what})")) and d.get("shown", True)]  # fmt: skip
    return float(np.mean(found)) if found else None


def skill(real: Transitions, predicted: pd.DataFrame, blind: pd.DataFrame) -> dict[str, float]:
    """Per real state variable: 1 - mean |predicted - real next| / the same for the
    history-blind draws (paired, transition by transition): 0 for a draw that ignores the
    history, 1 for a perfect forecast; a stochastic simulator scores below 1 by its noise."""
    obs, pred, base = numeric(real.next), numeric(predicted), numeric(blind)
    out = {}
    for name in obs.columns:
        ok = obs[name].notna() & pred[name].notna() & base[name].notna()
        if ok.sum() < MIN_TRANSITIONS or obs[name].nunique() <= 2:
            continue
        err = (pred[name][ok] - obs[name][ok]).abs().mean()
        out[name] = float(1 - err / max((base[name][ok] - obs[name][ok]).abs().mean(), 1e-12))
    return out


def what_if(
    real: Transitions, draws: dict[str, pd.DataFrame], action: str, levels: list[Any]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per state variable and level (but the first): the predicted difference of next-step
    means (and measurement rates) when every held-out history gets that level instead of the
    first (`draws`' "<action>=<level>"), against the observed difference adjusted for the
    current state and the previous treatment (least squares, `_design`; a 95% bootstrap
    interval over patients); agreeing: within the interval, or of the same sign and within
    `TOLERANCE`; `shown`: the interval excludes 0 (`agreement` counts only those)."""
    x = _design(real, levels)
    _, inverse = np.unique(real.patient, return_inverse=True)
    rows_of = np.split(np.argsort(inverse, kind="stable"), np.cumsum(np.bincount(inverse))[:-1])
    rng = np.random.default_rng(0)
    resamples = [  # patients drawn with replacement, each with all its transitions
        np.concatenate([rows_of[i] for i in rng.integers(0, len(rows_of), len(rows_of))])
        for _ in range(BOOTSTRAP // 4)
    ]
    obs = numeric(real.next)
    first = numeric(draws[f"{action}={levels[0]}"])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in obs.columns:
        for what, y in (("mean", obs[name]), ("rate", obs[name].notna().astype(float))):
            y = y.to_numpy(float)
            if what == "rate" and y.min() == 1:
                continue
            ok = ~np.isnan(y)
            if ok.sum() < 2 * MIN_TRANSITIONS:
                continue
            coef = _least_squares(x[ok], y[ok])
            boot = np.array([_least_squares(x[r][ok[r]], y[r][ok[r]]) for r in resamples])
            for k, lv in enumerate(levels[1:]):
                other = numeric(draws[f"{action}={lv}"])
                if what == "mean":
                    predicted = other[name].mean() - first[name].mean()
                else:
                    predicted = other[name].notna().mean() - first[name].notna().mean()
                low, high = np.nanpercentile(boot[:, 1 + k], [2.5, 97.5])
                observed = coef[1 + k]
                close = np.sign(predicted) == np.sign(observed)
                close = close and abs(predicted - observed) <= TOLERANCE * abs(observed)
                out.setdefault(f"{name} ({what})", {})[str(lv)] = {
                    "observed": float(observed), "low": float(low), "high": float(high),
                    "predicted": float(predicted),
                    "agrees": bool(close or low <= predicted <= high),
                    "shown": bool(low > 0 or high < 0),  # the data show a difference
                }  # fmt: skip
    return out


def _design(real: Transitions, levels: list[Any]) -> np.ndarray:
    """Intercept, one column per level but the first, the level one step earlier (one-hot,
    the first step apart), then per state variable its current value standardised (0 where
    not measured) and whether it is measured."""
    cols = [np.ones(len(real.level))]
    cols += [(real.level == lv).astype(float) for lv in levels[1:]]
    cols += [(real.previous == lv).astype(float) for lv in levels]
    now = numeric(real.now)
    for name in now.columns:
        v = now[name].to_numpy(float)
        seen = ~np.isnan(v)
        if seen.sum() > 1 and np.nanstd(v) > 0:
            cols.append(np.where(seen, (v - np.nanmean(v)) / np.nanstd(v), 0.0))
        if 0 < seen.mean() < 1:
            cols.append(seen.astype(float))
    return np.column_stack(cols)


def _least_squares(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(x, y, rcond=None)[0]
