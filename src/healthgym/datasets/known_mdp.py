"""A small known Markov decision process of ICU stays (issue 28's ground truth): treatment-
dependent transitions, death and discharge that end a stay with an outcome row, a confounded
behaviour policy, and the exact value of any policy by dynamic programming.

Each step a patient has a severity s in 0..4 (recorded as `Severity`, with two noisy
measurements of it, `Lactate` and `MAP`) and is treated or not (`Treat`, the action). Then,
in this order: death with probability `DEATH[s] + HARM * Treat` (treatment's side effect),
else discharge with probability `DISCHARGE[s]`, else severity moves by -1, 0 or +1 with
probabilities that treatment shifts towards recovery (`MOVES`). A stay that ends in death or
discharge gets one more row: the measurements and `Treat` empty, `died` or `discharged` = 1
(on every other row both are 0). A stay still running after `HORIZON` steps ends without an
outcome row (truncated). The return is 1 for a stay that does not end in death (survival),
so a policy's value is its survival probability.

The behaviour policy treats with probability `sigmoid(gamma * (s - 2))`: sicker patients are
treated more (confounding by indication; `gamma` sets its strength, 0 treats at random with
probability 1/2). Policies here are arrays `p[t, s]`: the probability of treating at step t
in severity s (`stationary(...)` repeats one row over the steps).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..data.cohort import Cohort
from ..data.schema import Schema, Variable

STATES = 5
HORIZON = 20
#: Severity at the stay's start.
START = np.array([0.15, 0.3, 0.3, 0.15, 0.1])
DEATH = np.array([0.0, 0.005, 0.02, 0.06, 0.15])
HARM = 0.01
DISCHARGE = np.array([0.35, 0.12, 0.03, 0.0, 0.0])
#: MOVES[a][s] = probabilities of severity -1, 0, +1 (clipped at 0 and 4).
MOVES = np.array(
    [
        [[0.0, 0.8, 0.2], [0.15, 0.6, 0.25], [0.15, 0.55, 0.3], [0.15, 0.5, 0.35], [0.2, 0.8, 0.0]],
        [[0.0, 0.9, 0.1], [0.35, 0.55, 0.1], [0.45, 0.45, 0.1], [0.5, 0.4, 0.1], [0.45, 0.55, 0.0]],
    ]
)
#: Lactate ~ N(LACTATE[s], 0.4), MAP ~ N(MAP[s], 6): noisy readings of the severity.
LACTATE = 1.0 + 0.9 * np.arange(STATES)
MAP_MEAN = 85.0 - 6.0 * np.arange(STATES)
LACTATE_SD, MAP_SD = 0.4, 6.0

SCHEMA = Schema(
    id="stay",
    time="step",
    variables=[
        Variable("Severity", "categorical", "dynamic", levels=list(range(STATES)), missing="flag"),
        Variable("Lactate", "real", "dynamic", transform="minmax", missing="flag"),
        Variable("MAP", "real", "dynamic", transform="minmax", missing="flag"),
        Variable("Treat", "binary", "action", levels=[0, 1], missing="flag"),
        Variable("died", "binary", "dynamic", levels=[0, 1]),
        Variable("discharged", "binary", "dynamic", levels=[0, 1]),
    ],
)


def transition(s: int, a: int) -> np.ndarray:
    """P(next severity | s, a, the patient stays)."""
    out = np.zeros(STATES)
    for move, p in zip((-1, 0, 1), MOVES[a][s], strict=True):
        out[int(np.clip(s + move, 0, STATES - 1))] += p
    return out


def stationary(p: np.ndarray | list[float]) -> np.ndarray:
    """A policy that treats with probability p[s] at every step."""
    return np.tile(np.asarray(p, dtype=float), (HORIZON, 1))


def behaviour(gamma: float) -> np.ndarray:
    return stationary(1 / (1 + np.exp(-gamma * (np.arange(STATES) - 2))))


def lactate_threshold(threshold: float) -> np.ndarray:
    """Treat when the measured lactate exceeds `threshold` (its noise integrated out)."""
    return stationary(norm.sf((threshold - LACTATE) / LACTATE_SD))


def value(policy: np.ndarray) -> float:
    """The exact survival probability under `policy` (backward induction over the horizon)."""
    v = np.ones(STATES)  # alive at the horizon
    for t in reversed(range(HORIZON)):
        new = np.zeros(STATES)
        for s in range(STATES):
            for a, pa in ((0, 1 - policy[t, s]), (1, policy[t, s])):
                death = DEATH[s] + HARM * a
                stay = (1 - death) * (1 - DISCHARGE[s])
                new[s] += pa * ((1 - death) * DISCHARGE[s] + stay * transition(s, a) @ v)
        v = new
    return float(START @ v)


def optimal() -> tuple[np.ndarray, float]:
    """The optimal (time-dependent, deterministic) policy and its value."""
    v = np.ones(STATES)
    policy = np.zeros((HORIZON, STATES))
    for t in reversed(range(HORIZON)):
        q = np.zeros((STATES, 2))
        for s in range(STATES):
            for a in (0, 1):
                death = DEATH[s] + HARM * a
                stay = (1 - death) * (1 - DISCHARGE[s])
                q[s, a] = (1 - death) * DISCHARGE[s] + stay * transition(s, a) @ v
        policy[t] = q.argmax(axis=1)
        v = q.max(axis=1)
    return policy, float(START @ v)


def policies(gamma: float = 1.0) -> dict[str, np.ndarray]:
    """The policies whose values the benchmarks check: never, always, two lactate thresholds,
    random, the behaviour policy and the optimal one."""
    return {
        "never": stationary(np.zeros(STATES)),
        "always": stationary(np.ones(STATES)),
        "lactate > 2.5": lactate_threshold(2.5),
        "lactate > 4": lactate_threshold(4.0),
        "random": stationary(np.full(STATES, 0.5)),
        "behaviour": behaviour(gamma),
        "optimal": optimal()[0],
    }


def known_mdp_cohort(
    n: int = 2000, gamma: float = 1.0, seed: int = 0, policy: np.ndarray | None = None
) -> Cohort:
    """`n` stays drawn under `policy` (default: the behaviour policy of strength `gamma`)."""
    rng = np.random.default_rng(seed)
    act = behaviour(gamma) if policy is None else policy
    rows: list[tuple] = []
    for stay in range(n):
        s = int(rng.choice(STATES, p=START))
        for t in range(HORIZON):
            a = int(rng.random() < act[t, s])
            lactate = round(float(rng.normal(LACTATE[s], LACTATE_SD)), 2)
            pressure = round(float(rng.normal(MAP_MEAN[s], MAP_SD)), 1)
            rows.append((stay, t, s, lactate, pressure, a, 0, 0))
            if rng.random() < DEATH[s] + HARM * a:
                rows.append((stay, t + 1, np.nan, np.nan, np.nan, np.nan, 1, 0))
                break
            if rng.random() < DISCHARGE[s]:
                rows.append((stay, t + 1, np.nan, np.nan, np.nan, np.nan, 0, 1))
                break
            s = int(rng.choice(STATES, p=transition(s, a)))
    table = pd.DataFrame(rows, columns=["stay", "step", *SCHEMA.names])
    return Cohort(table, SCHEMA)


def survival(cohort: Cohort) -> pd.Series:
    """Each stay's return: 1 unless it ended in death."""
    return 1.0 - cohort.table.groupby(cohort.schema.id, sort=False)["died"].max().astype(float)


def severity_policy(policy: np.ndarray) -> Callable[[pd.DataFrame], np.ndarray]:
    """`policy` as a function of the rows (their `step` and `Severity`) for `rl.ope`:
    P(Treat = 0), P(Treat = 1) per row."""

    def probabilities(rows: pd.DataFrame) -> np.ndarray:
        t = np.clip(rows["step"].to_numpy(int), 0, HORIZON - 1)
        s = rows["Severity"].to_numpy(float).astype(int)
        p = policy[t, s]
        return np.column_stack([1 - p, p])

    return probabilities
