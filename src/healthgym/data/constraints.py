"""Constraints that real data obeys and every sample keeps: bounds, monotone steps, a fixed start.

A schema variable may declare:

- `min` / `max` (reals): every value lies in [min, max];
- `monotone: increasing | decreasing` (dynamic; a real, or a binary/categorical whose level
  order is its order): within each patient every observed value is >= (<=) the patient's
  previous observed value; missing steps are skipped;
- `start` (dynamic): every patient's first step holds this value (a number, or a level).

One module, one job per function:

- `check_declaration(variable)`: the declared fields are sound (called by `Variable`);
- `check_table(table, schema)`: a real table obeys them, else a ValueError naming the
  column and a patient (called by `Schema.validate` on real tables);
- `enforce(table, schema)`: a decoded long table made to obey them by construction, never by
  rejection: clip to [min, max], set each patient's first step to `start`, then a running
  maximum (increasing) or minimum (decreasing) along each patient's steps. Every model family
  decodes through it (`Tokenizer.inverse_transform`, `Encoder.inverse_transform`);
- `propose(table, id, variable)`: what `infer_schema` proposes: `monotone` where every
  patient with >= 2 values is monotone in one direction and at least `MIN_EVIDENCE` patients
  change, `start` where the first step of every patient (at least `MIN_EVIDENCE` of them)
  holds the same value. Inference never sets bounds unless asked (`infer_schema(...,
  bounds=True)` takes the training minimum and maximum of each real).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .schema import Schema, Variable

MONOTONE = ("increasing", "decreasing")
#: Inference proposes a constraint only with at least this many patients behind it.
MIN_EVIDENCE = 10


# ---- declarations ------------------------------------------------------------------------------
def check_declaration(v: Variable) -> None:
    """Raise ValueError where a variable's `monotone`, `min`, `max` or `start` cannot hold."""
    where = f"variable {v.name!r}"
    if v.monotone is not None and v.monotone not in MONOTONE:
        raise ValueError(f"{where}: monotone must be one of {MONOTONE}, got {v.monotone!r}")
    for field in ("min", "max"):
        value = getattr(v, field)
        if value is None:
            continue
        if v.kind != "real":
            raise ValueError(
                f"{where}: {field} applies to real variables (a {v.kind} is bounded by its levels)"
            )
        setattr(v, field, _number(value, f"{where}: {field}"))
    if v.min is not None and v.max is not None and v.min > v.max:
        raise ValueError(f"{where}: min {v.min} is above max {v.max}")
    if v.role == "static" and (v.monotone is not None or v.start is not None):
        raise ValueError(
            f"{where}: monotone and start apply to dynamic variables (a static is constant)"
        )
    if v.start is None:
        return
    if v.kind == "real":
        v.start = _number(v.start, f"{where}: start")
        lo = -math.inf if v.min is None else v.min
        hi = math.inf if v.max is None else v.max
        if not lo <= v.start <= hi:
            raise ValueError(f"{where}: start {v.start} lies outside [min, max] = [{lo}, {hi}]")
    else:
        code = _level_index(v.start, v.levels)
        if code < 0:
            raise ValueError(f"{where}: start {v.start!r} is not one of its levels {v.levels}")
        v.start = v.levels[code]


def declares(v: Variable) -> bool:
    """Does the variable declare any constraint?"""
    return any(x is not None for x in (v.monotone, v.min, v.max, v.start))


def _number(value: Any, where: str) -> int | float:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return value


def _level_index(value: Any, levels: list[Any]) -> int:
    for i, level in enumerate(levels):
        if value is level or (value == level and not isinstance(value, bool | np.bool_)):
            return i
    return -1


# ---- per patient views -------------------------------------------------------------------------
def _runs(table: pd.DataFrame, id: str) -> np.ndarray:
    """Patient number of each row (rows of a patient are contiguous)."""
    ids = table[id].to_numpy()
    return np.cumsum(np.r_[True, ids[1:] != ids[:-1]]) - 1


def _ordered(col: pd.Series, v: Variable) -> np.ndarray:
    """Floats whose order is the variable's order: reals as values, levels as codes; NaN if
    missing."""
    if v.kind == "real":
        return col.to_numpy(dtype=float)
    codes = pd.Index(v.levels, dtype=object).get_indexer(col.astype(object))
    if (codes < 0).any():  # 1.0 read from a CSV for the level 1
        codes = np.array([_level_index(x, v.levels) for x in col.astype(object)])
    return np.where(codes >= 0, codes, np.nan).astype(float)


def _steps(x: np.ndarray, run: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consecutive observed values of each patient, missing steps skipped: (previous, next,
    row of next)."""
    rows = np.flatnonzero(np.isfinite(x))
    same = run[rows[1:]] == run[rows[:-1]]
    return x[rows[:-1]][same], x[rows[1:]][same], rows[1:][same]


# ---- checking a real table ---------------------------------------------------------------------
def check_table(table: pd.DataFrame, schema: Schema) -> None:
    """Raise ValueError naming the column and a patient where `table` breaks a declared
    constraint. Expects a validated long table (patients contiguous, steps in order)."""
    variables = [v for v in schema.variables if declares(v)]
    if not variables:
        return
    ids = table[schema.id].to_numpy()
    run = _runs(table, schema.id)
    first = np.r_[True, run[1:] != run[:-1]]
    for v in variables:
        col = table[v.name]
        x = _ordered(col, v)
        for bound, side in (("min", "below"), ("max", "above")):
            limit = getattr(v, bound)
            if limit is None:
                continue
            bad = x < limit if bound == "min" else x > limit
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"column {v.name!r} has {int(bad.sum())} values {side} its declared "
                    f"{bound} {limit}, the first {x[i]:g} in patient {_plain(ids[i])!r}"
                )
        if v.start is not None:
            code = v.start if v.kind == "real" else float(_level_index(v.start, v.levels))
            bad = first & ~(x == code)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"column {v.name!r} must start at its declared start {v.start!r}, but "
                    f"patient {_plain(ids[i])!r} starts at {_plain(col.iloc[i])!r} "
                    f"({int(bad.sum())} patients in all)"
                )
        if v.monotone is not None:
            prev, nxt, row = _steps(x, run)
            bad = nxt < prev if v.monotone == "increasing" else nxt > prev
            if bad.any():
                i = int(row[np.flatnonzero(bad)[0]])
                raise ValueError(
                    f"column {v.name!r} is declared monotone: {v.monotone}, but it goes "
                    f"{'down' if v.monotone == 'increasing' else 'up'} in patient "
                    f"{_plain(ids[i])!r} at {schema.time} {_plain(table[schema.time].iloc[i])!r} "
                    f"({int(bad.sum())} steps in all)"
                )


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# ---- enforcing on a decoded table --------------------------------------------------------------
def enforce(table: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """`table` with every declared constraint holding in every patient (changed in place and
    returned; untouched when the schema declares none). Rows of a patient are contiguous, in
    step order: clip to [min, max], the first step set to `start` (even where it was
    generated missing), then a running maximum or minimum over the observed steps."""
    variables = [v for v in schema.variables if declares(v)]
    if not variables or len(table) == 0:
        return table
    run = _runs(table, schema.id)
    first = np.r_[True, run[1:] != run[:-1]]
    for v in variables:
        x = _constrained(v, table[v.name], first, lambda x, m: _running(x, run, m))
        if x is not None:
            table[v.name] = x
    return table


class StepConstraints:
    """`enforce` one step at a time, for patients drawn step by step (the simulator): the same
    clipping, first-step values and running extremes, kept per patient from step to step."""

    def __init__(self, schema: Schema) -> None:
        self.variables = {v.name: v for v in schema.variables if declares(v)}
        self.extreme: dict[str, np.ndarray] = {}  # running max or min; NaN before a value

    def apply(self, values: dict[str, Any], first: bool | np.ndarray) -> dict[str, Any]:
        """One step's values by variable (arrays over patients), constrained; ``first``:
        whether it is the stay's first step (where `start` holds), per patient or for all."""
        out = dict(values)
        for name, x in values.items():
            v = self.variables.get(name)
            if v is None:
                continue
            first_rows = np.broadcast_to(first, np.shape(x))
            y = _constrained(
                v, pd.Series(x), first_rows, lambda x, m, name=name: self._running(name, x, m)
            )
            if y is not None:
                out[name] = y
        return out

    def restart(self, rows: np.ndarray) -> None:
        """New stays begin in ``rows`` (bool): their running extremes start afresh."""
        for extreme in self.extreme.values():
            extreme[rows] = np.nan

    def _running(self, name: str, x: np.ndarray, monotone: str) -> np.ndarray:
        """`_running` continued from the previous steps: NaN stays NaN, skipped."""
        before = self.extreme.get(name, np.full(len(x), np.nan))
        extreme = np.fmax(before, x) if monotone == "increasing" else np.fmin(before, x)
        self.extreme[name] = np.where(np.isnan(x), before, extreme)
        return np.where(np.isnan(x), np.nan, extreme)


def _constrained(
    v: Variable,
    col: pd.Series,
    first: np.ndarray,
    running: Callable[[np.ndarray, str], np.ndarray],
) -> np.ndarray | None:
    """The column ``col`` of a declaring variable ``v`` with its constraints applied (None:
    nothing to change): clipped to [min, max], `start` on the ``first`` rows (a stay's first
    step), then ``running`` (x, monotone) extremes: one rule for a table and for one step."""
    if v.kind == "real":
        x = col.to_numpy(dtype=float, copy=True)
        if v.min is not None or v.max is not None:
            x = np.clip(x, v.min, v.max)  # NaN stays NaN
        if v.start is not None:
            x[first] = v.start
        return x if v.monotone is None else running(x, v.monotone)
    if v.start is None and v.monotone is None:
        return None
    codes = _ordered(col, v)
    if v.start is not None:
        codes[first] = _level_index(v.start, v.levels)
    if v.monotone is not None:
        codes = running(codes, v.monotone)
    levels = np.asarray([*v.levels, None], dtype=object)
    return levels[np.where(np.isfinite(codes), codes, len(v.levels)).astype(int)]


def _running(x: np.ndarray, run: np.ndarray, monotone: str) -> np.ndarray:
    """Running maximum (increasing) or minimum (decreasing) within each patient; NaN kept."""
    grouped = pd.Series(x).groupby(run, sort=False)
    out = grouped.cummax() if monotone == "increasing" else grouped.cummin()
    return out.to_numpy(dtype=float)


# ---- inference ---------------------------------------------------------------------------------
def propose(table: pd.DataFrame, id: str, v: Variable) -> dict[str, Any]:
    """The `monotone` and `start` fields the data supports for a dynamic variable (see the
    module docstring); {} for none."""
    if v.role != "dynamic":
        return {}
    run = _runs(table, id)
    x = _ordered(table[v.name], v)
    out: dict[str, Any] = _direction(x, run) if _numeric(v) else {}
    first = np.r_[True, run[1:] != run[:-1]]
    starts = x[first]
    if len(starts) >= MIN_EVIDENCE and np.isfinite(starts).all() and np.all(starts == starts[0]):
        if v.kind == "real":
            s = float(starts[0])
            out["start"] = int(s) if s.is_integer() else s
        else:
            out["start"] = v.levels[int(starts[0])]
    return out


def _numeric(v: Variable) -> bool:
    """A real, or levels that are all numbers (so their order is the values' order)."""
    return v.kind == "real" or all(
        isinstance(level, int | float) and not isinstance(level, bool) for level in v.levels
    )


def _direction(x: np.ndarray, run: np.ndarray) -> dict[str, str]:
    """{"monotone": direction} when every patient moves one way and enough of them move."""
    prev, nxt, row = _steps(x, run)
    up, down = run[row[nxt > prev]], run[row[nxt < prev]]
    if len(down) == 0 and len(np.unique(up)) >= MIN_EVIDENCE:
        return {"monotone": "increasing"}
    if len(up) == 0 and len(np.unique(down)) >= MIN_EVIDENCE:
        return {"monotone": "decreasing"}
    return {}


def direction(table: pd.DataFrame, id: str, v: Variable) -> str | None:
    """The declared monotone direction, else the one the data shows (for the evaluation)."""
    if v.monotone is not None:
        return v.monotone
    if v.role != "dynamic" or not _numeric(v):
        return None
    return _direction(_ordered(table[v.name], v), _runs(table, id)).get("monotone")
