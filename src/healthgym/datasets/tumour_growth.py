"""Tumour growth under chemotherapy and radiotherapy (issue 28's second ground truth): the
pharmacokinetic-pharmacodynamic model of Geng et al. 2017 (Sci. Rep. 7:13542), as used to
benchmark counterfactual prediction over time by Lim et al. 2018 (RMSN), Bica et al. 2020
(CRN) and Melnychuk et al. 2022 (Causal Transformer), written here from its equations.

A patient's tumour volume V (cm^3, a sphere of diameter D) moves each day as

    V(t+1) = V(t) * (1 + rho * log(K / V(t)) - beta_c * C(t) - (alpha * d(t) + beta * d(t)^2)
                     + e(t)),   e(t) ~ N(0, 0.01^2)

with Gompertz growth (rho, carrying capacity K = the volume of a 30 cm sphere), the
chemotherapy concentration C(t) = C(t-1) / 2 + 5 * chemo(t) (mg/m^3, a one-day half-life) and
the radiotherapy dose d(t) = 2 * radio(t) (Gy, linear-quadratic cell kill, alpha / beta = 10).
Per patient: (alpha, rho) bivariate normal with correlation 0.87, beta_c normal, each kept
positive; a patient type (1, 2, 3, a static) raises alpha by 10% (type 1) or beta_c by 10%
(type 3). The initial diameter is lognormal by cancer stage (I-IV, in the stages' observed
proportions), kept within 0.3-13 cm. A stay ends at death (D >= 13 cm; the volume recorded at
that size, no treatment), at recovery (probability exp(-V * CELLS): a tumour of a few cells)
or after `HORIZON` days.

The recorded care treats on each day, chemo and radio independently, with probability
sigmoid(gamma / D_MAX * (Dbar(t) - D_MAX / 2)), Dbar the mean diameter over the last `WINDOW`
days: bigger tumours are treated more (time-varying confounding of strength `gamma`; 0
treats at random with probability about 1/2 at the typical sizes).

`counterfactual(patients, start, treatments)` gives, from a recorded patient's true state
(its parameters and chemo concentration) at day `start`, the expected volumes under any
treatment sequence: the truth that tau-step-ahead predictions are measured against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.cohort import Cohort
from ..data.schema import Schema, Variable

HORIZON = 60  #: days
WINDOW = 15  #: days the recorded care's mean diameter spans
D_MAX = 13.0  #: cm: a tumour this wide is fatal
K = np.pi / 6 * 30.0**3  #: carrying capacity, cm^3
CHEMO_DOSE, RADIO_DOSE = 5.0, 2.0  #: mg/m^3 per chemo day, Gy per radio day
NOISE = 0.01
CELLS = 5.8e8  #: tumour cells per cm^3: a stay ends in recovery with probability exp(-V CELLS)
#: Stage: (share, log-diameter mean, log-diameter sd); shares from the observed counts.
STAGES = {
    "I": (1432, 1.72, 4.70),
    "II": (128, 1.96, 1.63),
    "IIIA": (1306, 1.91, 9.40),
    "IIIB": (7248, 2.76, 6.87),
    "IV": (12840, 3.86, 8.82),
}
RHO, ALPHA, BETA_C = (7e-5, 7.23e-3), (0.0398, 0.168), (0.028, 0.0007)  #: (mean, sd)
ALPHA_RHO_CORRELATION, ALPHA_BETA_RATIO = 0.87, 10.0

SCHEMA = Schema(
    id="patient",
    time="day",
    variables=[
        Variable("type", "categorical", "static", levels=[1, 2, 3]),
        Variable("volume", "real", "dynamic", transform="minmax"),
        Variable("chemo", "binary", "action", levels=[0, 1], missing="flag"),
        Variable("radio", "binary", "action", levels=[0, 1], missing="flag"),
    ],
)


def volume(diameter: np.ndarray | float) -> np.ndarray:
    return np.pi / 6 * np.asarray(diameter, dtype=float) ** 3


def diameter(v: np.ndarray | float) -> np.ndarray:
    return np.cbrt(6 / np.pi * np.asarray(v, dtype=float))


V_MAX = float(volume(D_MAX))  #: the fatal volume, cm^3 (1150): also the NRMSE's scale


def patients(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Per patient: type, initial volume and the dynamics' parameters."""
    kind = rng.integers(1, 4, n)
    shares = np.array([s[0] for s in STAGES.values()], dtype=float)
    stage = rng.choice(len(STAGES), n, p=shares / shares.sum())
    mean, sd = (np.array([s[k] for s in STAGES.values()])[stage] for k in (1, 2))
    d0 = np.exp(mean + sd * rng.standard_normal(n))
    for _ in range(1000):  # truncation by redrawing the few out of range
        out = (d0 < 0.3) | (d0 >= D_MAX)
        if not out.any():
            break
        d0[out] = np.exp(mean[out] + sd[out] * rng.standard_normal(out.sum()))
    d0 = np.clip(d0, 0.3, D_MAX * 0.999)
    cov = ALPHA_RHO_CORRELATION * ALPHA[1] * RHO[1]
    alpha, rho = np.empty(n), np.empty(n)
    todo = np.ones(n, bool)
    while todo.any():
        draw = rng.multivariate_normal(
            [ALPHA[0], RHO[0]], [[ALPHA[1] ** 2, cov], [cov, RHO[1] ** 2]], todo.sum()
        )
        ok = (draw > 0).all(1)
        rows = np.flatnonzero(todo)[ok]
        alpha[rows], rho[rows] = draw[ok, 0], draw[ok, 1]
        todo[rows] = False
    beta_c = np.abs(BETA_C[0] + BETA_C[1] * rng.standard_normal(n))
    alpha = alpha * np.where(kind == 1, 1.1, 1.0)
    beta_c = beta_c * np.where(kind == 3, 1.1, 1.0)
    return pd.DataFrame(
        {
            "type": kind,
            "v0": volume(d0),
            "rho": rho,
            "alpha": alpha,
            "beta": alpha / ALPHA_BETA_RATIO,
            "beta_c": beta_c,
        }  # fmt: skip
    )


def grow(p: pd.DataFrame, v: np.ndarray, c: np.ndarray, radio: np.ndarray, e: np.ndarray):
    """The next day's volumes of patients `p` from volumes v, concentrations c, radio (0/1)."""
    dose = RADIO_DOSE * radio
    alpha, beta, beta_c = (p[k].to_numpy() for k in ("alpha", "beta", "beta_c"))
    kill = beta_c * c + alpha * dose + beta * dose**2
    nxt = v * (1 + p["rho"].to_numpy() * np.log(K / v) - kill + e)
    return np.clip(nxt, 1e-12, V_MAX)


def treatment_probability(mean_diameter: np.ndarray, gamma: float) -> np.ndarray:
    return 1 / (1 + np.exp(-gamma / D_MAX * (mean_diameter - D_MAX / 2)))


def simulate(n: int = 1000, gamma: float = 2.0, seed: int = 0) -> tuple[Cohort, pd.DataFrame]:
    """`n` patients treated by the recorded care of strength `gamma`: the cohort (a row per
    day: volume, chemo, radio) and each patient's parameters with its chemo concentration
    per day (`concentrations`, (n, HORIZON)), for `counterfactual`."""
    rng = np.random.default_rng(seed)
    p = patients(n, rng)
    v = p["v0"].to_numpy().copy()
    c = np.zeros(n)
    alive = np.ones(n, bool)
    diameters = np.full((n, HORIZON), np.nan)
    conc = np.zeros((n, HORIZON))
    rows: list[pd.DataFrame] = []
    for t in range(HORIZON):
        diameters[:, t] = diameter(v)
        window = diameters[:, max(0, t - WINDOW + 1) : t + 1]
        prob = treatment_probability(np.nanmean(window, axis=1), gamma)
        chemo, radio = (rng.random(n) < prob).astype(int), (rng.random(n) < prob).astype(int)
        dead = v >= V_MAX
        treat = alive & ~dead
        chemo, radio = chemo * treat, radio * treat
        c = c / 2 + CHEMO_DOSE * chemo
        conc[:, t] = c
        i = np.flatnonzero(alive)
        day = {"patient": i, "day": t, "type": p["type"].to_numpy()[i], "volume": v[i]}
        for name, x in (("chemo", chemo), ("radio", radio)):
            day[name] = np.where(treat, x, np.nan)[i]  # none on the day of death
        rows.append(pd.DataFrame(day))
        alive &= ~dead & ~(rng.random(n) < np.exp(-v * CELLS))  # death; recovery (a few cells)
        if not alive.any():
            break
        v = np.where(alive, grow(p, v, c, radio, NOISE * rng.standard_normal(n)), v)
    table = pd.concat(rows).sort_values(["patient", "day"], kind="stable", ignore_index=True)
    p["concentrations"] = list(conc)
    return Cohort(table, SCHEMA), p


def counterfactual(
    p: pd.DataFrame,
    start: int,
    volume_now: np.ndarray,
    treatments: np.ndarray,
    draws: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """(n, tau) expected volumes on days start+1..start+tau of patients `p` (rows of
    `simulate`'s parameters) whose volume on day `start` is `volume_now`, treated on days
    start..start+tau-1 by `treatments` (n, tau, 2: chemo, radio) instead of as recorded: the
    mean over `draws` noise paths, a death keeping the fatal volume."""
    rng = np.random.default_rng(seed)
    n, tau = treatments.shape[:2]
    before = np.stack(p["concentrations"].to_numpy())[:, start - 1] if start > 0 else np.zeros(n)
    rep = p.loc[p.index.repeat(draws)].reset_index(drop=True)
    v = np.repeat(np.asarray(volume_now, dtype=float), draws)
    c = np.repeat(before, draws)
    out = np.zeros((n * draws, tau))
    for k in range(tau):
        chemo, radio = (np.repeat(treatments[:, k, j], draws) for j in (0, 1))
        c = c / 2 + CHEMO_DOSE * chemo
        alive = v < V_MAX
        v = np.where(alive, grow(rep, v, c, radio, NOISE * rng.standard_normal(len(v))), v)
        out[:, k] = v
    return out.reshape(n, draws, tau).mean(axis=1)
