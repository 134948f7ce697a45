"""A schema guessed from a long table: the rules a person would apply first (documented in
docs/data.md, each threshold a keyword), printed as YAML for them to check and edit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from .constraints import propose
from .row_rules import infer_rules
from .schema import Schema, Variable, _check_float32, _describe, _is_numeric, _plain

# Inference thresholds (documented in docs/data.md, overridable via infer_schema keywords).
MAX_INTEGER_LEVELS = 10  # an integer column with at most this many distinct values is categorical
MAX_STRING_LEVELS = 100  # a text column with more distinct values is rejected (id or free text)
BOXCOX_MIN_SKEW = 1.0  # a non-negative real with |skewness| above this gets Box-Cox


def infer_schema(
    table: pd.DataFrame,
    id: str,
    time: str,
    *,
    max_integer_levels: int = MAX_INTEGER_LEVELS,
    max_string_levels: int = MAX_STRING_LEVELS,
    boxcox_min_skew: float = BOXCOX_MIN_SKEW,
    overrides: dict[str, dict[str, Any]] | None = None,
    bounds: bool = False,
) -> Schema:
    """Guess a schema from a long table.

    Rules: text, bool and category columns are categorical; integer-valued numeric columns
    with at most `max_integer_levels` distinct values are categorical; any categorical with
    two levels is binary; other numerics are real, with Box-Cox when non-negative and
    |skewness| > `boxcox_min_skew`, else min-max. A variable constant within every patient
    is static. A column with NaNs gets `missing: flag`. The `rows` block holds the row rules
    the table shows clearly (`data.row_rules.infer_rules`: items never together, items only
    on a stay's last or first row). A dynamic variable gets `monotone`
    where every patient moves one way and `start` where every patient starts at the same
    value (`constraints.propose`); `bounds=True` also sets each real's `min`/`max` to its
    training range (otherwise bounds are only user-declared). `overrides` replaces fields per
    variable, e.g. `{"GCS": {"kind": "categorical", "levels": list(range(3, 16))}}`.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(table).__name__}")
    if id == time:
        raise ValueError(f"the id and time columns must differ; both are {id!r}")
    if max_integer_levels < 0:
        raise ValueError(f"max_integer_levels must be >= 0, got {max_integer_levels}")
    for c in (id, time):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; it has {_describe(table.columns)}")
    if len(table) == 0:
        raise ValueError("the table is empty (no rows)")
    variables = []
    for name in table.columns:
        if name in (id, time):
            continue
        v = _infer_variable(table, id, name, max_integer_levels, max_string_levels, boxcox_min_skew)
        fields = propose(table, id, v)
        if bounds and v.kind == "real":
            x = table[name].to_numpy(dtype=float)
            fields |= {"min": float(np.nanmin(x)), "max": float(np.nanmax(x))}
        variables.append(replace(v, **fields) if fields else v)
    schema = Schema(id=id, time=time, variables=variables)
    schema = schema.with_overrides(**overrides) if overrides else schema
    rules = infer_rules(table.sort_values([id, time], kind="stable"), schema)
    return replace(schema, rows=rules) if rules else schema


def _infer_variable(
    table: pd.DataFrame,
    id: str,
    name: str,
    max_integer_levels: int,
    max_string_levels: int,
    boxcox_min_skew: float,
) -> Variable:
    col = table[name]
    present = col.dropna()
    if present.empty:
        raise ValueError(f"column {name!r} is entirely missing (all NaN)")
    missing = "flag" if col.isna().any() else "none"
    nunique = col.groupby(table[id].to_numpy(), sort=False).nunique(dropna=False)
    role = "static" if (nunique <= 1).all() else "dynamic"
    levels: list[Any] | None = None
    if _is_numeric(col):
        x = present.to_numpy(dtype=float)
        if not np.isfinite(x).all():
            raise ValueError(f"column {name!r} holds infinite values")
        _check_float32(name, x)
        uniq = np.unique(x)
        if np.all(uniq == np.round(uniq)) and len(uniq) <= max_integer_levels:
            levels = [int(u) for u in uniq]
    else:
        uniq = pd.unique(present)
        if len(uniq) > max_string_levels:
            _check_numeric_text(name, present)
            raise ValueError(
                f"column {name!r} has {len(uniq)} distinct text values (more than "
                f"{max_string_levels}): it looks like an identifier or free text; drop it"
            )
        try:
            levels = sorted(_plain(u) for u in uniq)
        except TypeError:
            levels = [_plain(u) for u in uniq]
    if levels is not None:
        if len(levels) == 1:
            raise ValueError(f"column {name!r} has a single value {levels[0]!r}: nothing to model")
        kind = "binary" if len(levels) == 2 else "categorical"
        return Variable(name, kind, role, levels=levels, missing=missing)
    skew = float(pd.Series(x).skew())
    transform = "boxcox" if x.min() >= 0 and abs(skew) > boxcox_min_skew else "minmax"
    whole = bool(np.all(uniq == np.round(uniq)) and np.abs(uniq).max() < 2**53)
    return Variable(name, "real", role, transform=transform, missing=missing, integer=whole)


def _check_numeric_text(name: str, present: pd.Series) -> None:
    """A ValueError where a text column is mostly numbers: name the cells that are not."""
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().mean() >= 0.5:
        stray = pd.unique(present[numbers.isna()])
        raise ValueError(
            f"column {name!r} looks numeric except for values {_describe(stray)}: fix or "
            "empty those cells (an empty cell is a missing value)"
        )
