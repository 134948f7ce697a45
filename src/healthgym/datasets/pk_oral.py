"""A ground-truth cohort of rows of two kinds: oral dosing records from a one-compartment
pharmacokinetic model (issue 33), with dose rows and sample rows that never mix.

The model (first-order absorption and elimination, the textbook Bateman function, e.g.
Gabrielsson & Weiner, Pharmacokinetic and Pharmacodynamic Data Analysis): a dose D taken at
t_d gives the plasma concentration

    C(t) = F D ka / (V (ka - ke)) * (exp(-ke (t - t_d)) - exp(-ka (t - t_d))),  ke = CL / V,

summed over the doses taken before t (superposition). Covariates act on clearance and volume
as allometric powers of weight (CL ~ (WT/70)^0.75, V ~ WT/70) and clearance falls with age
beyond 40 (`AGE_ON_CL` per year); each patient's CL, V and ka carry log-normal variability.
Samples are drawn at irregular, sparse times and measured with multiplicative error
(C exp(eps), eps ~ N(0, SIGMA^2)).

Rows: one per event, in time order. A dose row holds `DOSE` (mg) and no `CONC`; a sample row
holds `CONC` (mg/L) and no `DOSE`. `TIME` is hours since the first dose (the integer `step`
is the event's index). Statics: `WT` (kg), `AGE` (years), `SEX`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.cohort import Cohort
from ..data.schema import Schema, Variable

#: Population values: clearance (L/h), volume (L), absorption rate (1/h), bioavailability.
CL, V, KA, F = 5.0, 50.0, 1.2, 0.9
#: Between-patient SD of log CL, log V, log ka; residual SD of log concentration.
OMEGA = (0.3, 0.2, 0.4)
SIGMA = 0.15
AGE_ON_CL = 0.01  # clearance falls 1% per year of age beyond 40
DOSES_MG = (100, 200, 400)
INTERVALS_H = (8, 12, 24)

SCHEMA = Schema(
    id="pid",
    time="step",
    variables=[
        Variable("WT", "real", "static", transform="minmax"),
        Variable("AGE", "real", "static", transform="minmax", integer=True),
        Variable("SEX", "binary", "static", levels=["F", "M"]),
        Variable("TIME", "real", "dynamic", transform="minmax", monotone="increasing", start=0.0),
        Variable("DOSE", "real", "dynamic", transform="minmax", missing="flag"),
        Variable("CONC", "real", "dynamic", transform="boxcox", missing="flag"),
    ],
)


def concentration(t: np.ndarray, doses: list[tuple[float, float]], cl: float, v: float,
                  ka: float) -> np.ndarray:  # fmt: skip
    """The model's concentration at times `t` after (time, mg) doses (superposition)."""
    ke = cl / v
    c = np.zeros_like(t, dtype=float)
    for t_d, amount in doses:
        dt = t - t_d
        after = dt > 0
        c[after] += (
            F * amount * ka / (v * (ka - ke)) * (np.exp(-ke * dt[after]) - np.exp(-ka * dt[after]))
        )
    return c


def pk_oral(n: int = 200, seed: int = 0) -> Cohort:
    """`n` patients of oral dosing records (see the module docstring); 2 to about 50 rows each."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n):
        wt = float(np.clip(rng.normal(75, 15), 40, 140).round(1))
        age = int(rng.integers(18, 86))
        sex = str(rng.choice(["F", "M"]))
        eta = rng.normal(0, OMEGA)
        cl = CL * (wt / 70) ** 0.75 * (1 - AGE_ON_CL * max(age - 40, 0)) * np.exp(eta[0])
        v, ka = V * (wt / 70) * np.exp(eta[1]), KA * np.exp(eta[2])
        dose, every = float(rng.choice(DOSES_MG)), float(rng.choice(INTERVALS_H))
        n_doses = int(rng.integers(1, 11))
        doses = [(k * every, dose) for k in range(n_doses)]
        horizon = n_doses * every
        n_samples = int(rng.integers(1, 16))
        times = np.sort(rng.uniform(0.25, horizon, n_samples).round(2))
        conc = concentration(times, doses, cl, v, ka) * np.exp(rng.normal(0, SIGMA, n_samples))
        events = [(t, amount, np.nan) for t, amount in doses]
        events += [(t, np.nan, round(float(c), 4)) for t, c in zip(times, conc, strict=True)]
        events.sort(key=lambda e: (e[0], np.isnan(e[1])))  # a dose before a sample at a tie
        for step, (t, amount, c) in enumerate(events):
            rows.append((pid, step, wt, age, sex, float(t), amount, c))
    table = pd.DataFrame(rows, columns=["pid", "step", *SCHEMA.names])
    return Cohort(table, SCHEMA)
