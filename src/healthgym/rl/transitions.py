"""A cohort's stays as RL arrays (observations, actions, rewards), and the scaling of the
observations of a trained default model: shared by the Minari export, the simulator and its
fidelity report, and written with the run by training (so this module imports no model).

One episode per patient stay. With T steps a stay has T observations and T - 1 transitions:
at step t the action is the treatment recorded at step t, the next observation is step t + 1
and the reward is the reward expression on (step t, step t + 1) (`healthgym.rl.rewards`). A
stay ends in a termination, or in a truncation when it reaches the cohort's longest stay
(the observation window cut it). Stays of one step have no transition and are left out.

Observations (float32): `ObservationLayout`, the one the simulator uses too, with the
cohort's medians as the fill values. Actions: the level index of each action variable (a real
action is cut into `action_bins` quantile bins); a missing action repeats the stay's previous
one (the first level at the start).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import Cohort, level_codes
from .observations import ObservationLayout, scaling
from .rewards import Reward, warn_of_leaks

DEFAULT_ACTION_BINS = 5
#: The most quantile bins of a real treatment (a policy's choices, not a resolution).
MAX_ACTION_BINS = 100


@dataclass
class Transitions:
    """A cohort as RL arrays: per patient, observations (T, d) and actions/rewards (T - 1)."""

    observations: list[np.ndarray]
    actions: list[np.ndarray]  # (T - 1,) or (T - 1, A) level indices
    rewards: list[np.ndarray]
    truncated: list[bool]
    observation_names: list[str]
    action_levels: dict[str, list[Any]]
    skipped: int  # stays of one step


def transitions(
    cohort: Cohort,
    reward: str | Callable[..., Any],
    actions: Sequence[str] = (),
    action_bins: int = DEFAULT_ACTION_BINS,
    hidden: Sequence[str] = (),
    longest: int | None = None,
    previous: bool = False,
) -> Transitions:
    """The cohort's stays as observation, action and reward arrays (see the module);
    `hidden` variables (an outcome known only at the end, say) are left out of the
    observations but may appear in the reward. A stay of `longest` steps (default: the
    cohort's longest; the simulator's run's, when exported beside one) ends truncated.
    `previous`: the observations hold the treatments of the step before (one-hot)."""
    schema, table = cohort.schema, cohort.table
    if isinstance(action_bins, bool) or not isinstance(action_bins, int):
        raise ValueError(f"action_bins must be an integer, got {action_bins!r}")
    if not 2 <= action_bins <= MAX_ACTION_BINS:
        raise ValueError(f"action bins must be 2 to {MAX_ACTION_BINS}, got {action_bins}")
    unknown = sorted(set(hidden) - set(schema.names))
    if unknown:
        raise ValueError(f"hidden {unknown} are not variables; the schema has {schema.names}")
    actions = list(actions) or [v.name for v in schema.actions]
    if not actions:
        raise ValueError(
            "no action variable: give --actions COL[,COL...] or mark them role: action"
        )
    for name in actions:
        if name not in schema:
            raise ValueError(f"action {name!r} is not a variable; the schema has {schema.names}")
        if schema[name].is_static:
            raise ValueError(f"action {name!r} is static: a treatment must vary over the stay")
    rule = Reward(reward, schema.names)
    warn_of_leaks(rule, schema, hidden)
    ids = table[schema.id].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    lengths = np.diff(np.r_[starts, len(ids)])
    filled = table.groupby(schema.id, sort=False).ffill()  # carried forward within a stay
    filled[schema.id] = ids
    reals = [v.name for v in schema.variables if v.kind == "real"]
    medians = {
        name: float(np.nanmedian(table[name])) for name in reals if table[name].notna().any()
    }
    codes, levels = _action_codes(cohort, filled, actions, action_bins)
    layout = ObservationLayout.of(
        schema, [*actions, *hidden], medians, levels if previous else None
    )
    before = None
    if previous:
        before = np.vstack([np.full((1, codes.shape[1]), -1), codes[:-1]])
        before[starts] = -1  # a stay's first step has no treatment before it
    obs, names = layout.encode(filled, table.notna(), before), list(layout.names)
    longest = int(lengths.max()) if longest is None else longest
    out = Transitions([], [], [], [], names, levels, int((lengths < 2).sum()))
    now_rows = np.concatenate(
        [np.arange(s, s + n - 1) for s, n in zip(starts, lengths, strict=True)]
    )
    last = np.concatenate([np.arange(n - 1) == n - 2 for n in lengths])
    rewards = rule(filled.iloc[now_rows], filled.iloc[now_rows + 1], last)
    bad = ~np.isfinite(rewards)
    if bad.any():
        warnings.warn(
            f"reward {reward!r} is missing (never measured) on {bad.sum()} of {len(bad)} "
            "transitions; they get 0",
            stacklevel=2,
        )
        rewards[bad] = 0.0
    at = 0
    for s, n in zip(starts, lengths, strict=True):
        if n < 2:
            continue
        out.observations.append(obs[s : s + n])
        out.actions.append(
            codes[s : s + n - 1].squeeze(1) if len(actions) == 1 else codes[s : s + n - 1]
        )
        out.rewards.append(rewards[at : at + n - 1])
        out.truncated.append(bool(n >= longest))
        at += n - 1
    return out


def _action_codes(
    cohort: Cohort, filled: pd.DataFrame, actions: list[str], bins: int
) -> tuple[np.ndarray, dict[str, list[Any]]]:
    """(rows, A) level indices of the action variables, and each one's levels."""
    codes, levels = [], {}
    for name in actions:
        v, col = cohort.schema[name], filled[name]
        if v.kind == "real":
            x = col.to_numpy(dtype=np.float64)
            edges = np.unique(np.nanquantile(x, np.linspace(0, 1, bins + 1)))
            if len(edges) < 2:
                raise ValueError(f"action {name!r} has fewer than two distinct values")
            code = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
            code = np.where(np.isnan(x), -1, code)
            levels[name] = [f"[{a:g}, {b:g})" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        else:
            code = level_codes(col, v.levels)
            levels[name] = list(v.levels)
        codes.append(np.where(code < 0, 0, code))  # never recorded in the stay: the first level
    return np.stack(codes, axis=1).astype(np.int64), levels


#: Patients drawn from a run to scale its observations by, and their seed: fixed, so the
#: statistics training writes and any recomputed ones agree.
SCALING_PATIENTS, SCALING_SEED = 2000, 0


def observation_statistics(model: Any) -> dict[str, list[float]]:
    """Mean and scale of every observation column a simulator of the trained default model
    can show (its schema's treatments as actions, the previous ones included, nothing hidden),
    from `SCALING_PATIENTS` patients drawn from it: what training writes with the run
    (`observations.json`). A column's figures do not depend on the others, so any layout
    picks its own by name."""
    names, mean, scale = _drawn_scaling(model, [v.name for v in model.schema.actions], (), True)
    return {n: [float(m), float(s)] for n, m, s in zip(names, mean, scale, strict=True)}


def scaling_of_run(
    model: Any, actions: Sequence[str], hidden: Sequence[str], previous: bool
) -> tuple[np.ndarray, np.ndarray]:
    """`scaling` of the observations of patients drawn from a trained default model: those
    its run keeps (`model.observation_stats`) where they name every column, else drawn
    again alike; the same for the export (`normalize=True` with `run=`) and the simulator."""
    schema = model.schema
    saved = getattr(model, "observation_stats", None) or {}
    if saved and all(schema[a].kind != "real" for a in actions):
        back = {a: list(schema[a].levels) for a in actions} if previous else None
        names = ObservationLayout.of(schema, [*actions, *hidden], {}, back).names
        if all(n in saved for n in names):
            figures = np.array([saved[n] for n in names], dtype=np.float32).reshape(-1, 2)
            return figures[:, 0], figures[:, 1]
    return _drawn_scaling(model, actions, hidden, previous)[1:]


def _drawn_scaling(
    model: Any, actions: Sequence[str], hidden: Sequence[str], previous: bool
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The observation names, means and scales of the run's seeded draw of patients."""
    cohort = model.sample(SCALING_PATIENTS, seed=SCALING_SEED)
    with warnings.catch_warnings():  # a leak warning concerns a policy, not these figures
        warnings.simplefilter("ignore")
        data = transitions(cohort, "0", actions, hidden=hidden, previous=previous)
    mean, scale = scaling(np.concatenate(data.observations))
    return data.observation_names, mean, scale
