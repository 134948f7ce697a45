"""Is the patient simulator faithful? `simulator_fidelity(run_dir, holdout, ...)` -> Report.

Three checks against real patients the model never saw:

- one step ahead: for every held-out transition, the simulator is given the real history
  and the recorded treatment and draws the next state; per state variable, the KS distance
  between simulated and real next values, overall and by treatment level;
- the behaviour policy's return: patients drawn from the model with the treatments it
  learned from the recorded care, against the real patients' returns under the same reward;
- sensitivity to treatment: per state variable, the simulated mean next value given each
  treatment level minus given the first level (from the same real histories), against the
  observed difference in the data. Observational data do not identify causal effects: both
  numbers describe the recorded care (who was treated, not what treating does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy import stats

from ..data.cohort import Cohort
from ..evaluation.figures import new_figure
from ..evaluation.report import Report
from .offline import transitions

CAPTIONS = {
    "one_step": "One step ahead: KS distance between simulated and real next values per "
    "state variable, given the real history and the recorded treatment (lower is better).",
    "treatment_effect": "Mean next value given each treatment level minus given the first "
    "level: simulated (from real histories) against observed in the data. Observational "
    "data: a difference is an association in the recorded care, not a causal effect.",
}


def simulator_fidelity(
    run_dir: str | Path,
    holdout: Cohort,
    *,
    reward: Any = "0",
    actions: list[str] | None = None,
    patients: int = 2000,
    seed: int = 0,
) -> Report:
    """The fidelity report of the simulator of `run_dir` on held-out real patients."""
    from ..models.healthgym.model import HealthGym
    from .simulator import Simulator

    model = HealthGym.load(run_dir)
    sim = Simulator(model, reward=reward, actions=actions)
    schema = sim.tok.schema
    rng = torch.Generator().manual_seed(seed)
    np_rng = np.random.default_rng(seed)
    real, simulated, taken = _one_step(sim, holdout, rng, np_rng)
    state = [v for v in schema.dynamic if v.name not in sim.actions]
    one_step: dict[str, Any] = {}
    reals = [v.name for v in state if v.kind == "real"]
    for name in reals:
        a, b = real[name].to_numpy(float), simulated[name].to_numpy(float)
        ok = ~np.isnan(a) & ~np.isnan(b)
        if ok.sum() < 5:
            continue
        row = {"all": float(stats.ks_2samp(a[ok], b[ok]).statistic)}
        for action in sim.actions:
            for level in sim.levels[action]:
                at = ok & (taken[action].to_numpy() == level)
                if at.sum() >= 5:
                    row[f"{action}={level}"] = float(stats.ks_2samp(a[at], b[at]).statistic)
        one_step[name] = row
    effects = _effects(sim, holdout, reals, rng, np_rng)
    returns = _returns(model, sim, holdout, patients, seed)
    agree = [
        np.sign(e["simulated"]) == np.sign(e["observed"])
        for per_var in effects.values()
        for e in per_var.values()
        if np.isfinite(e["observed"]) and abs(e["observed"]) > 0
    ]
    metrics = {
        "cohorts": {"holdout": f"{holdout}", "simulator": str(run_dir)},
        "simulator": {
            "one_step_ks_mean": float(np.mean([r["all"] for r in one_step.values()]))
            if one_step
            else None,
            "one_step": one_step,
            "return_real": returns["real"],
            "return_simulated": returns["simulated"],
            "return_gap": abs(returns["simulated"] - returns["real"])
            / max(abs(returns["real"]), 1e-9),
            "effects": effects,
            "effect_sign_agreement": float(np.mean(agree)) if agree else None,
        },
    }
    notes = [
        "Observational data do not identify causal effects: the simulator reproduces how "
        "states followed treatments in the recorded care, confounding included.",
        f"Behaviour policy: {patients} patients drawn from the model with the treatments it "
        "learned; real: the held-out patients, both under the same reward.",
    ]
    figures = {"one_step": _plot_one_step(one_step), "treatment_effect": _plot_effects(effects)}
    figures = {k: v for k, v in figures.items() if v is not None}
    return Report(metrics, figures, captions=CAPTIONS, notes=notes)


def _one_step(sim: Any, holdout: Cohort, rng: torch.Generator, np_rng: np.random.Generator):
    """(real next states, simulated next states, recorded treatments) per transition."""
    table = holdout.table.reset_index(drop=True)
    real, drawn, acts = [], [], []
    for rows, values in _next_states(sim, holdout, rng, np_rng):
        drawn.append(pd.DataFrame(values))
        real.append(table.iloc[rows + 1].reset_index(drop=True))
        acts.append(table.iloc[rows][sim.actions].reset_index(drop=True))
    return pd.concat(real), pd.concat(drawn), pd.concat(acts)


def _next_states(sim, holdout, rng, np_rng, action: str | None = None, level: Any = None):
    """Per step t, (rows of step t in the holdout table, decoded simulated step t + 1) of the
    patients with a next step, given their real history; `action` set to `level` at t."""
    tok = sim.tok
    tokens = tok.transform(holdout, seed=0, hold=sim.hold)  # ties as the model was trained
    static, dynamic = torch.from_numpy(tokens.static), torch.from_numpy(tokens.dynamic)
    lengths, first = tokens.lengths, np.r_[0, np.cumsum(tokens.lengths)[:-1]]
    if action is not None:
        column, at = tok.column_at(action)
        set_to = torch.as_tensor(column.token_of(level))
    for t in range(int(lengths.max()) - 1):
        live = np.flatnonzero(lengths > t + 1)
        prefix = dynamic[live, : t + 2].clone()
        if action is not None:
            prefix[:, t, at : at + len(column.vocab)] = set_to
        sim.draw_state(static[live], prefix, rng)
        yield (
            first[live] + t,
            tok.decode_columns(tok.dynamic_columns, prefix[:, t + 1].numpy(), np_rng),
        )


def _effects(
    sim: Any, holdout: Cohort, names: list[str], rng: torch.Generator, np_rng: np.random.Generator
) -> dict[str, dict[str, dict[str, float]]]:
    """Per variable and level of the first treatment (but its first level): simulated and
    observed differences of the mean next value against the first level."""
    action = sim.actions[0]
    levels = sim.levels[action]
    table = holdout.table.reset_index(drop=True)
    ids = table[holdout.schema.id].to_numpy()
    has_next = np.r_[ids[1:] == ids[:-1], False]
    now, nxt = table[has_next], table.shift(-1)[has_next]
    simulated = {}
    for lv in levels:  # one simulation per level, every variable read from it
        drawn = pd.concat(
            pd.DataFrame(v)[names] for _, v in _next_states(sim, holdout, rng, np_rng, action, lv)
        )
        simulated[lv] = drawn.apply(pd.to_numeric, errors="coerce").mean()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in names:
        observed = {lv: nxt[name][now[action] == lv].mean() for lv in levels}
        out[name] = {
            f"{action}={lv}": {
                "simulated": float(simulated[lv][name] - simulated[levels[0]][name]),
                "observed": float(observed[lv] - observed[levels[0]]),
            }
            for lv in levels[1:]
        }
    return out


def _returns(model: Any, sim: Any, holdout: Cohort, patients: int, seed: int) -> dict[str, float]:
    """Mean return per patient: real held-out patients, and patients drawn from the model."""
    drawn = model.sample(patients, seed=seed)
    out = {}
    for key, cohort in (("real", holdout), ("simulated", drawn)):
        data = transitions(cohort, sim.reward.spec, sim.actions)
        out[key] = float(np.mean([r.sum() for r in data.rewards])) if data.rewards else 0.0
    return out


def _plot_one_step(one_step: dict[str, dict[str, float]]) -> Figure | None:
    if not one_step:
        return None
    names = list(one_step)
    keys = sorted({k for r in one_step.values() for k in r}, key=lambda k: (k != "all", k))
    fig, (ax,) = new_figure(1, 1, size=(max(6.0, len(names) * 0.8), 3.5))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        ax.bar(
            np.arange(len(names)) + i * width,
            [one_step[n].get(key, np.nan) for n in names],
            width,
            label=key,
        )
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set_ylabel("KS distance, next step")
    ax.legend(fontsize=7)
    return fig


def _plot_effects(effects: dict[str, dict[str, dict[str, float]]]) -> Figure | None:
    points = [(n, k, e) for n, per in effects.items() for k, e in per.items()]
    if not points:
        return None
    fig, (ax,) = new_figure(1, 1, size=(5.0, 4.5))
    x = np.array([e["observed"] for *_, e in points])
    y = np.array([e["simulated"] for *_, e in points])
    ax.scatter(x, y, s=12)
    for (n, k, _), xi, yi in zip(points, x, y, strict=True):
        ax.annotate(f"{n} ({k})", (xi, yi), fontsize=6)
    lim = np.nanmax(np.abs(np.r_[x, y, 1e-9]))
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("observed difference of the mean next value")
    ax.set_ylabel("simulated difference")
    return fig
