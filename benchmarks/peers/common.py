"""What every adapter shares: the budget clock, the adapter interface, and the cohort <-> peer
table conversion (categorical levels as strings, one row per patient for the statics, rows in
step order for the dynamics) and its way back to a Cohort with the training schema."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from healthgym import Cohort
from healthgym.data.schema import Schema, Variable


class Budget:
    """A wall-clock allowance that starts when it is made."""

    def __init__(self, minutes: float) -> None:
        if not minutes > 0:
            raise ValueError(f"minutes must be > 0, got {minutes}")
        self.seconds = 60.0 * minutes
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        """Seconds left (never below 0)."""
        return max(0.0, self.seconds - self.elapsed())

    def over(self) -> bool:
        return self.elapsed() >= self.seconds


@dataclass
class Adapter:
    """The interface of every model in the comparison.

    `fit(train, minutes)` trains within the budget (the harness times the whole call: that is
    the reported training time); `sample(n)` returns `n` synthetic patients as a Cohort with
    the training schema (`strict=False`). `progress` says how far training got (steps,
    epochs) and `notes` what the adapter had to do to the data or the output.
    """

    name: str = ""
    library: str = ""  #: the pip distribution whose version the report prints
    settings: dict[str, Any] = field(default_factory=dict)
    progress: str = ""
    notes: list[str] = field(default_factory=list)

    def fit(self, train: Cohort, minutes: float) -> Adapter:
        raise NotImplementedError

    def sample(self, n: int) -> Cohort:
        raise NotImplementedError


# ---- cohort -> peer tables ---------------------------------------------------------------
MISSING = "__missing__"  #: the level string of a missing categorical, where a peer needs one


def level_strings(v: Variable) -> list[str]:
    return [str(level) for level in v.levels]


def peer_tables(cohort: Cohort, missing: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(statics: id + static variables, one row per patient; dynamics: id + dynamic variables,
    the cohort's rows in step order, without the step column).

    Categorical cells become their level's string; missing ones stay NaN, or become `missing`
    when given. Reals stay floats with NaN.
    """
    schema = cohort.schema

    def convert(frame: pd.DataFrame, variables: list[Variable]) -> pd.DataFrame:
        frame = frame.copy()
        for v in variables:
            if v.kind == "real":
                frame[v.name] = frame[v.name].astype(float)
                continue
            col = frame[v.name]
            values = col.map(lambda x: None if x is None or x != x else str(x)).astype(object)
            if missing is not None:
                values = values.where(values.notna(), missing)
            else:
                values = values.where(values.notna(), np.nan)
            frame[v.name] = values
        return frame.reset_index(drop=True)

    statics = convert(cohort.static_table(), list(schema.static))
    dynamics = convert(
        cohort.table[[schema.id, *[v.name for v in schema.dynamic]]], list(schema.dynamic)
    )
    return statics, dynamics


@dataclass
class Fill:
    """Training-set values that stand in for cells a peer cannot give back as the schema
    requires: the median (reals) or most frequent level of each variable."""

    values: dict[str, Any]

    @classmethod
    def of(cls, cohort: Cohort) -> Fill:
        out: dict[str, Any] = {}
        statics = cohort.static_table()
        for v in cohort.schema.variables:
            col = (statics if v.role == "static" else cohort.table)[v.name]
            if v.kind == "real":
                out[v.name] = float(col.median())
            else:
                out[v.name] = col.dropna().astype(object).mode().iloc[0]
        return cls(out)


def to_cohort(
    schema: Schema,
    statics: pd.DataFrame,
    dynamics: pd.DataFrame,
    fill: Fill,
    notes: list[str],
    id_column: str | None = None,
) -> Cohort:
    """A peer's output back in the cohort's schema.

    `statics` has one row per synthetic patient (id + static variables), `dynamics` one row
    per step (id + dynamic variables) in step order within each patient. Steps are numbered
    0.. per patient, ids renumbered 1..n, level strings mapped back to levels. Whatever the
    schema cannot hold is repaired and counted in `notes`: unknown levels or missing values
    in a `missing: none` variable take the training mode/median; negative values of a Box-Cox
    or log1p variable are clipped to its lower bound; patients without a row are dropped.
    """
    key = id_column or schema.id
    statics = statics.drop_duplicates(key).reset_index(drop=True)
    dyn = dynamics.reset_index(drop=True)
    have_rows = statics[key].isin(set(dyn[key]))
    if not have_rows.all():
        notes.append(f"{int((~have_rows).sum())} synthetic patients had no rows: dropped")
    statics = statics[have_rows]
    dyn = dyn[dyn[key].isin(set(statics[key]))]
    # patients in the order the statics list them, rows in the order the peer produced them
    order = pd.Series(np.arange(len(statics)), index=statics[key].to_numpy())
    dyn = dyn.assign(_p=order.reindex(dyn[key].to_numpy()).to_numpy())
    dyn = dyn.sort_values("_p", kind="stable").reset_index(drop=True)
    table = pd.DataFrame(
        {
            schema.id: dyn["_p"].to_numpy() + 1,
            schema.time: dyn.groupby("_p", sort=False).cumcount().to_numpy(),
        }
    )
    per_patient = statics.set_index(key)
    repaired = {
        v.name: pd.Series(_repair(v, per_patient[v.name].to_numpy(), fill, notes, "patients"))
        for v in schema.static
    }
    for v in schema.variables:
        if v.role == "static":
            table[v.name] = repaired[v.name].to_numpy()[dyn["_p"].to_numpy()]
        else:
            table[v.name] = _repair(v, dyn[v.name].to_numpy(), fill, notes, "rows")
    return Cohort(table, schema, strict=False)


def _repair(v: Variable, values: np.ndarray, fill: Fill, notes: list[str], unit: str) -> np.ndarray:
    """`values` as the schema holds them; what had to change is counted in `notes`."""
    if v.kind == "real":
        x = np.array(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
        x[~np.isfinite(x)] = np.nan
        low = {"boxcox": 0.0, "log1p": -1.0 + 1e-9}.get(v.transform or "")
        if low is not None and np.any(x < low):
            notes.append(f"{v.name}: {int(np.sum(x < low))} {unit} below {low:g} clipped")
            x = np.where(x < low, low, x)
        if v.missing == "none" and np.isnan(x).any():
            notes.append(f"{v.name}: {int(np.isnan(x).sum())} {unit} missing, set to the median")
            x = np.where(np.isnan(x), fill.values[v.name], x)
        return x
    lookup = dict(zip(level_strings(v), v.levels, strict=True))
    out = np.empty(len(values), dtype=object)
    unknown = 0
    for i, cell in enumerate(values):
        if cell is None or pd.isna(cell) or cell == MISSING:
            out[i] = None
            continue
        text = str(cell)
        if text not in lookup:  # 1.0 for the level 1, a peer's own rare-category token ...
            try:
                number = float(text)
                text = str(int(number)) if number.is_integer() else text
            except ValueError:
                pass
        if text in lookup:
            out[i] = lookup[text]
        else:
            unknown += 1
            out[i] = None
    if unknown:
        notes.append(f"{v.name}: {unknown} {unit} with unknown levels set to missing")
    missing = np.array([c is None for c in out])
    if v.missing == "none" and missing.any():
        notes.append(f"{v.name}: {int(missing.sum())} {unit} missing, set to the training mode")
        out[missing] = fill.values[v.name]
    return out


def merge_notes(notes: list[str]) -> list[str]:
    """Identical notes once, in first-seen order."""
    return list(dict.fromkeys(notes))
