"""Is the patient simulator faithful? `simulator_fidelity(run_dir, holdout, ...)` -> Report.

Checks against real patients the model never saw, each computed for the simulator and for
two baselines that it must beat (`one_step`): history-blind (a held-out next state drawn at
random) and treatment-blind (the same model with the treatments it reads shuffled among the
patients, or a run trained on shuffled treatments, `treatment_blind=`):

- one step ahead: every held-out transition's next state drawn given the real history and
  the recorded treatment: per real state variable, the KS distance to the real next values
  (overall and by treatment level) and the skill of the paired forecast against the
  history-blind draw (0: no better than ignoring the history);
- next-step differences between treatment levels (transitions grouped by the recorded
  level): of next-step means and of next-step measurement rates, predicted against observed
  (with a bootstrap interval), agreeing when of the same sign and within 25%;
- what if: the difference when every held-out history is given one level instead of the
  first, against the observed difference adjusted for the current state and the previous treatment;
- the behaviour policy's return: patients drawn with the treatments the model learned.

Observational data do not identify causal effects: the adjusted difference assumes the
current state holds every reason for treating; the report shows how the simulator follows
the recorded care, not what a treatment does.
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
from . import one_step
from .transitions import transitions

CAPTIONS = {
    "one_step": "One step ahead: KS distance between predicted and real next values per "
    "state variable, given the real history and the recorded treatment (lower is better); "
    "the simulator beside the two baselines.",
    "treatment_effect": "Differences between treatment levels, predicted against observed: "
    "next-step means and measurement rates grouped by the recorded level (circles) and the "
    "what-if difference against the observed one adjusted for the current state and the "
    "previous treatment (crosses); on the diagonal is right. Observational data: "
    "associations in the recorded care.",
}
PREDICTORS = {"simulator": "simulator", "treatment_blind": "treatment-blind baseline",
              "history_blind": "history-blind baseline"}  # fmt: skip


def simulator_fidelity(
    run_dir: str | Path,
    holdout: Cohort,
    *,
    reward: Any = "0",
    actions: list[str] | None = None,
    patients: int = 2000,
    seed: int = 0,
    treatment_blind: str | Path | None = None,
) -> Report:
    """The fidelity report of the simulator of `run_dir` on held-out real patients;
    `treatment_blind`: a run trained on the same patients with their treatments shuffled,
    the treatment-blind baseline (else the model with its treatment inputs shuffled)."""
    from ..models.healthgym.model import HealthGym
    from .simulator import Simulator

    model = HealthGym.load(run_dir)
    sim = Simulator(model, reward=reward, actions=actions)
    schema = sim.tok.schema
    holdout = Cohort(holdout.table, schema)
    action = sim.actions[0]
    levels = list(sim.levels[action])
    state = [v.name for v in schema.dynamic if v.name not in sim.actions]
    reals = [v.name for v in schema.dynamic if v.name in state and v.kind == "real"]
    rng, np_rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    real = one_step.transitions_of(holdout, state, action)
    blind_sim = sim
    if treatment_blind is not None:
        blind_sim = Simulator(HealthGym.load(treatment_blind), actions=sim.actions)
    history_blind = one_step.history_blind(real, np_rng)
    predictors = {
        "simulator": one_step.draw_next(sim, holdout, state, rng, np_rng),
        "treatment_blind": one_step.draw_next(
            blind_sim, holdout, state, rng, np_rng, scramble=treatment_blind is None
        ),
        "history_blind": {"recorded": history_blind}
        | {f"{action}={lv}": history_blind for lv in levels},
    }
    metrics: dict[str, Any] = {"cohorts": {"holdout": f"{holdout}", "simulator": str(run_dir)}}
    for key, draws in predictors.items():
        ks = _one_step_ks(real, draws["recorded"], reals, levels)
        grouped = one_step.differences(real, draws["recorded"], levels, seed)
        what_if = one_step.what_if(real, draws, action, levels)
        skills = one_step.skill(real, draws["recorded"], history_blind)
        metrics[key] = {
            "one_step_ks_mean": float(np.mean([r["all"] for r in ks.values()])) if ks else None,
            "one_step_skill": float(np.mean(list(skills.values()))) if skills else None,
            "next_mean_agreement": one_step.agreement(grouped, "mean"),
            "next_rate_agreement": one_step.agreement(grouped, "rate"),
            "what_if_agreement": one_step.agreement(what_if),
            "one_step": ks,
            "skill": skills,
            "next_differences": grouped,
            "what_if": what_if,
        }
    returns = _returns(model, sim, holdout, patients, seed)
    metrics["simulator"] |= {
        "return_real": returns["real"],
        "return_simulated": returns["simulated"],
        "return_gap": abs(returns["simulated"] - returns["real"]) / max(abs(returns["real"]), 1e-9),
    }
    blind = "a run trained on shuffled treatments" if treatment_blind else (
        "the model with its treatment inputs shuffled among patients")  # fmt: skip
    notes = [
        "Observational data do not identify causal effects: the simulator reproduces how "
        "states followed treatments in the recorded care, confounding included; the what-if "
        "reference adjusts for the current state and the previous treatment only.",
        f"Baselines: history-blind (a held-out next state drawn at random) and "
        f"treatment-blind ({blind}). Differences are compared where each level has "
        f">= {one_step.MIN_TRANSITIONS} transitions.",
        f"Behaviour policy: {patients} patients drawn from the model with the treatments it "
        "learned; real: the held-out patients, both under the same reward.",
    ]
    figures = {
        "one_step": _plot_one_step({k: metrics[k]["one_step"] for k in predictors}),
        "treatment_effect": _plot_differences(metrics),
    }
    figures = {k: v for k, v in figures.items() if v is not None}
    return Report(metrics, figures, captions=CAPTIONS, notes=notes)


def _one_step_ks(
    real: one_step.Transitions, drawn: pd.DataFrame, reals: list[str], levels: list[Any]
) -> dict[str, dict[str, float]]:
    """Per real state variable: KS distance of predicted to real next values, overall and
    by recorded treatment level."""
    out = {}
    for name in reals:
        a = real.next[name].to_numpy(float)
        b = pd.to_numeric(drawn[name], errors="coerce").to_numpy(float)
        ok = ~np.isnan(a) & ~np.isnan(b)
        if ok.sum() < 5:
            continue
        row = {"all": float(stats.ks_2samp(a[ok], b[ok]).statistic)}
        for level in levels:
            at = ok & (real.level == level)
            if at.sum() >= 5:
                row[str(level)] = float(stats.ks_2samp(a[at], b[at]).statistic)
        out[name] = row
    return out


def _returns(model: Any, sim: Any, holdout: Cohort, patients: int, seed: int) -> dict[str, float]:
    """Mean return per patient: real held-out patients, and patients drawn from the model."""
    drawn = model.sample(patients, seed=seed)
    out = {}
    for key, cohort in (("real", holdout), ("simulated", drawn)):
        data = transitions(cohort, sim.reward.spec, sim.actions)
        out[key] = float(np.mean([r.sum() for r in data.rewards])) if data.rewards else 0.0
    return out


def _plot_one_step(per: dict[str, dict[str, dict[str, float]]]) -> Figure | None:
    names = list(per["simulator"])
    if not names:
        return None
    fig, (ax,) = new_figure(1, 1, size=(max(6.0, len(names) * 0.8), 3.5))
    width = 0.8 / len(per)
    for i, (key, ks) in enumerate(per.items()):
        values = [ks.get(n, {}).get("all", np.nan) for n in names]
        ax.bar(np.arange(len(names)) + i * width, values, width, label=PREDICTORS[key])
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=45, ha="right")
    ax.set_ylabel("KS distance, next step")
    ax.legend(fontsize=7)
    return fig


def _plot_differences(metrics: dict[str, Any]) -> Figure | None:
    fig, (ax,) = new_figure(1, 1, size=(5.5, 4.5))
    lim, drawn = 1e-9, False
    for color, key in zip(("C0", "C1", "C2"), PREDICTORS, strict=True):
        for block, marker in (("next_differences", "o"), ("what_if", "x")):
            points = [(n, lv, d) for n, per in metrics[key][block].items()
                      for lv, d in per.items()]  # fmt: skip
            if not points:
                continue
            x = np.array([d["observed"] for *_, d in points])
            y = np.array([d["predicted"] for *_, d in points])
            scale = np.maximum(np.abs(x), 1e-12)  # each difference in units of the observed
            kind = "grouped" if marker == "o" else "what if"
            ax.scatter(x / scale, y / scale, s=14, marker=marker, color=color,
                       label=f"{PREDICTORS[key]} ({kind})")  # fmt: skip
            lim, drawn = max(lim, float(np.nanmax(np.abs(y / scale)))), True
    if not drawn:
        return None
    lim = min(max(lim, 1.5), 5.0)
    ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlim(-1.5, 1.5)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("observed difference (+1 / -1: its sign)")
    ax.set_ylabel("predicted difference / |observed|")
    ax.legend(fontsize=6)
    return fig
