"""Off-policy evaluation: a treatment policy's value estimated from recorded stays, before
anyone is treated by it (issue 28).

The stays are decision steps (rows where the treatment is recorded) with rewards: a
`terminal` reward per stay (e.g. survival) added to its last decision, and optional
per-decision `rewards`. The behaviour policy (how the recorded treatments were chosen) is
fitted by logistic regression on each decision row's features (its dynamic variables, their
missingness, the statics and the step). Estimators, each with a percentile bootstrap
interval over stays (everything refitted on each resample):

- `wis`: weighted importance sampling of whole-stay returns (Precup et al. 2000);
- `wpdis`: weighted per-decision importance sampling (a stay that ended keeps its weight);
- `fqe`: fitted Q evaluation (Le et al. 2019), gradient-boosted trees iterated backwards
  over the longest stay, the policy's expected Q at each stay's first decision;
- `dr`: weighted doubly robust (Thomas & Brunskill 2016), FQE's Q as the control variate.

A policy is a function of the decision rows (a DataFrame with the id, time and variables)
returning, per row, the probability of each treatment level (levels in the schema's order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import Cohort, level_codes

Policy = Callable[[pd.DataFrame], np.ndarray]
ESTIMATORS = ("wis", "wpdis", "fqe", "dr")
#: Behaviour probabilities are clipped here, so one rare treatment cannot take all the weight.
MIN_PROPENSITY = 0.01


@dataclass
class Decisions:
    """Decision rows, padded to stays x steps (`valid` marks real decisions)."""

    rows: pd.DataFrame  # the decision rows, stay by stay
    features: np.ndarray  # [decisions, F]
    actions: np.ndarray  # [decisions] level codes
    rewards: np.ndarray  # [decisions]
    stay: np.ndarray  # [decisions] stay index
    step: np.ndarray  # [decisions] decision index within the stay
    levels: int

    @property
    def stays(self) -> int:
        return int(self.stay.max()) + 1 if len(self.stay) else 0

    def subset(self, stays: np.ndarray) -> Decisions:
        """The decisions of these stays (with repeats: a bootstrap resample), renumbered."""
        first = np.searchsorted(self.stay, np.arange(self.stays + 1))
        index = np.concatenate([np.arange(first[s], first[s + 1]) for s in stays])
        new_stay = np.repeat(np.arange(len(stays)), np.diff(first)[stays])
        return Decisions(self.rows.iloc[index], self.features[index], self.actions[index],
                         self.rewards[index], new_stay, self.step[index], self.levels)  # fmt: skip


def decisions(
    cohort: Cohort,
    action: str,
    terminal: pd.Series | None = None,
    rewards: np.ndarray | None = None,
) -> Decisions:
    """The decision rows of `cohort` for treatment `action`: `terminal` (a value per stay id)
    is added to each stay's last decision; `rewards` (one per row of the cohort) to each row's."""
    schema, table = cohort.schema, cohort.table
    codes = _treatment_codes(cohort, action)
    keep = codes >= 0
    rows = table[keep]
    if rows.empty:
        raise ValueError(f"no row records the treatment {action!r}")
    stay = pd.factorize(rows[schema.id])[0]
    step = rows.groupby(stay).cumcount().to_numpy()
    r = np.zeros(len(rows)) if rewards is None else np.asarray(rewards, float)[keep]
    if terminal is not None:
        last = np.r_[stay[1:] != stay[:-1], True]
        r = r + np.where(last, terminal.reindex(rows[schema.id]).to_numpy(float), 0.0)
    if not np.isfinite(r).all():
        raise ValueError("a reward is missing (NaN) for some decision; check the terminal values")
    levels = len(schema[action].levels)
    return Decisions(rows, _features(cohort, rows, action), codes[keep], r, stay, step, levels)


def _treatment_codes(cohort: Cohort, action: str) -> np.ndarray:
    """Each row's treatment level code (-1: not recorded); a ValueError unless `action` is a
    binary or categorical treatment."""
    if action not in cohort.schema.names:
        raise ValueError(f"no variable {action!r}; the treatments are {_actions(cohort)}")
    v = cohort.schema[action]
    if v.role != "action" or v.kind == "real":
        raise ValueError(f"{action!r} must be a binary or categorical treatment (role: action)")
    return level_codes(cohort.table[action], v.levels)


def _actions(cohort: Cohort) -> list[str]:
    return [v.name for v in cohort.schema.actions]


def _features(cohort: Cohort, rows: pd.DataFrame, action: str) -> np.ndarray:
    """Per decision row: reals (missing at the median, with an indicator), one-hot levels of
    the other variables, and the step."""
    cols = [rows[cohort.schema.time].to_numpy(float)]
    for v in cohort.schema.variables:
        if v.name == action:
            continue
        col = rows[v.name]
        if v.kind == "real":
            x = col.to_numpy(float)
            missing = np.isnan(x)
            cols += [np.where(missing, np.nanmedian(x) if (~missing).any() else 0.0, x), missing]
        else:
            codes = level_codes(col, v.levels)
            cols += [codes == k for k in range(len(v.levels))]
    return np.column_stack(cols).astype(float)


def behaviour_model(d: Decisions) -> np.ndarray:
    """P(recorded level | row) of a logistic regression fitted on the decision rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    present = np.unique(d.actions)
    if len(present) == 1:
        return np.ones(len(d.actions))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(d.features, d.actions)
    proba = model.predict_proba(d.features)
    column = np.searchsorted(present, d.actions)
    return np.clip(proba[np.arange(len(d.actions)), column], MIN_PROPENSITY, 1.0)


def _padded(d: Decisions, values: np.ndarray, fill: float) -> np.ndarray:
    out = np.full((d.stays, int(d.step.max()) + 1), fill)
    out[d.stay, d.step] = values
    return out


def weights(d: Decisions, target: np.ndarray) -> np.ndarray:
    """(stays, steps) cumulative importance ratios target / behaviour up to each decision; a
    stay that ended keeps its last weight."""
    ratio = target[np.arange(len(d.actions)), d.actions] / behaviour_model(d)
    return np.cumprod(_padded(d, ratio, 1.0), axis=1)


def _shares(cumulative: np.ndarray) -> np.ndarray:
    """Each step's weights normalised over stays (0 where every weight is 0)."""
    totals = cumulative.sum(axis=0)
    return np.divide(cumulative, totals, out=np.zeros_like(cumulative), where=totals > 0)


def importance(d: Decisions, cumulative: np.ndarray) -> dict[str, float]:
    """WIS and WPDIS from the cumulative weights (`weights`)."""
    rewards = _padded(d, d.rewards, 0.0)
    whole = cumulative[:, -1]
    wis = float(whole @ rewards.sum(axis=1) / whole.sum()) if whole.sum() > 0 else np.nan
    return {"wis": wis, "wpdis": float((_shares(cumulative) * rewards).sum())}


def fitted_q(d: Decisions, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FQE: Q of each decision's recorded level and V (the policy's expected Q) per decision."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    onehot = np.eye(d.levels)
    x = np.hstack([d.features, onehot[d.actions]])
    nxt = np.r_[d.stay[1:] == d.stay[:-1], False]  # the stay goes on after this decision
    after = np.flatnonzero(nxt) + 1
    every = [np.hstack([d.features, np.repeat(onehot[[k]], len(d.actions), 0)])
             for k in range(d.levels)]  # fmt: skip
    q_all = np.zeros((len(d.actions), d.levels))
    for _ in range(int(d.step.max()) + 1):
        v_next = np.zeros(len(d.actions))
        v_next[np.flatnonzero(nxt)] = (target * q_all).sum(axis=1)[after]
        model = HistGradientBoostingRegressor(max_iter=60, max_depth=4, random_state=0)
        model.fit(x, d.rewards + v_next)
        q_all = np.column_stack([model.predict(e) for e in every])
    return q_all[np.arange(len(d.actions)), d.actions], (target * q_all).sum(axis=1)


def doubly_robust(d: Decisions, cumulative: np.ndarray, q: np.ndarray, v: np.ndarray) -> float:
    """Weighted doubly robust (per-decision weights normalised over stays)."""
    share = _shares(cumulative)
    before = np.hstack([np.full((d.stays, 1), 1.0 / d.stays), share[:, :-1]])
    r, qq, vv = (_padded(d, x, 0.0) for x in (d.rewards, q, v))
    return float((share * (r - qq)).sum() + (before * vv).sum())


def estimate(d: Decisions, policy: Policy, which: tuple[str, ...] = ESTIMATORS) -> dict[str, float]:
    target = np.asarray(policy(d.rows), float)
    if target.shape != (len(d.actions), d.levels):
        raise ValueError(f"the policy must give {d.levels} probabilities per decision row")
    cumulative = weights(d, target)  # the behaviour model fitted once per estimate
    out = importance(d, cumulative)
    if "fqe" in which or "dr" in which:
        q, v = fitted_q(d, target)
        first = d.step == 0
        out["fqe"] = float(v[first].mean())
        out["dr"] = doubly_robust(d, cumulative, q, v)
    return {k: out[k] for k in which}


def evaluate_policy(
    d: Decisions,
    policy: Policy,
    *,
    estimators: tuple[str, ...] = ESTIMATORS,
    bootstrap: int = 100,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each estimator's value and 95% percentile-bootstrap interval (`bootstrap` resamples of
    stays, everything refitted)."""
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        raise ValueError(f"unknown estimators {unknown}; known: {list(ESTIMATORS)}")
    point = estimate(d, policy, estimators)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in estimators}
    for _ in range(bootstrap):
        resample = estimate(d.subset(rng.integers(0, d.stays, d.stays)), policy, estimators)
        for k in estimators:
            draws[k].append(resample[k])
    out = {}
    for k in estimators:
        x = np.asarray(draws[k], float)
        x = x[np.isfinite(x)]
        low, high = np.percentile(x, [2.5, 97.5]) if len(x) else (np.nan, np.nan)
        out[k] = {"value": point[k], "low": float(low), "high": float(high)}
    return out


def decisions_with_reward(cohort: Cohort, action: str, reward: Any) -> Decisions:
    """Decisions whose rewards come from a `rewards.Reward` over each decision row and the
    stay's next row (its outcome row included; the row itself after a stay's last row), with
    `last` = 1 on a stay's last decision: the export's transitions (docs/rl.md)."""
    schema, table = cohort.schema, cohort.table
    codes = _treatment_codes(cohort, action)
    ids = table[schema.id].to_numpy()
    same_next = np.r_[ids[1:] == ids[:-1], False]
    following = np.where(same_next, np.arange(len(table)) + 1, np.arange(len(table)))
    keep = codes >= 0
    stay = pd.factorize(ids[keep])[0]
    last = np.r_[stay[1:] != stay[:-1], True]
    now = table[keep]
    nxt = table.iloc[following[keep]]
    r = np.full(len(table), np.nan)
    r[np.flatnonzero(keep)] = reward(now, nxt, last)
    return decisions(cohort, action, rewards=r)


def expression_policy(spec: str, cohort: Cohort, action: str) -> Policy:
    """A policy from an expression over a decision row (the reward language without NAME_next):
    its value, rounded and clipped, is the treatment's level index (for a binary treatment,
    true treats), e.g. `Lactate > 2.5`, `1` (always), `0` (never)."""
    from .rewards import NEXT, Reward

    _treatment_codes(cohort, action)  # a binary or categorical treatment
    levels = len(cohort.schema[action].levels)
    names = [v.name for v in cohort.schema.variables if v.name != action]
    checked = Reward(spec, names)
    if any(n.endswith(NEXT) or n == "last" for n in checked.used):
        raise ValueError(f"policy {spec!r} may read the decision row only (no NAME{NEXT}, last)")

    def probabilities(rows: pd.DataFrame) -> np.ndarray:
        value = checked(rows, rows, np.zeros(len(rows), dtype=bool))
        level = np.clip(np.nan_to_num(np.round(value)), 0, levels - 1).astype(int)
        return np.eye(levels)[level]

    return probabilities
