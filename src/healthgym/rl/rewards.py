"""Rewards for offline-RL datasets and the patient simulator.

A reward is an expression over a step's variables and the next step's (``MAP_next`` is
MAP at the next step), for example ``-(MAP_next < 65)`` or
``where(in_hospital_death == 1, -1, 0) * last``, evaluated on whole columns at once by
`simpleeval` (a whitelist of operators and the functions in `FUNCTIONS`; no attribute
access, no imports, never Python ``eval``), or a Python callable ``fn(now, next) -> array``
taking two DataFrames (one row per transition). Booleans count as 0/1; ``last`` is 1 on a
stay's last transition.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ..extras import require

NEXT = "_next"
#: Functions an expression may call (numpy, elementwise).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs,
    "minimum": np.minimum,
    "maximum": np.maximum,
    "where": np.where,
    "isnan": lambda x: pd.isna(np.asarray(x)),
    "log": np.log,
    "exp": np.exp,
    "clip": np.clip,
}


class Reward:
    """A checked reward: ``Reward("-(MAP_next < 65)", names)(now, nxt, last)`` -> (n,)."""

    def __init__(self, spec: str | Callable[..., Any], names: list[str]) -> None:
        self.spec = spec
        self.used: set[str] = set()  # the names an expression reads (only those are converted)
        if callable(spec):
            return
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError("reward must be an expression (text) or a callable")
        try:
            tree = ast.parse(spec, mode="eval")
        except SyntaxError as e:
            raise ValueError(f"reward {spec!r} is not an expression: {e.msg}") from None
        known = {*names, *(n + NEXT for n in names), "last", *FUNCTIONS}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        unknown = sorted(used - known)
        if unknown:
            raise ValueError(
                f"reward {spec!r} names {unknown}: use the cohort's variables, NAME{NEXT} for "
                f"the next step, 'last', and the functions {sorted(FUNCTIONS)}"
            )
        if any(isinstance(n, ast.Attribute | ast.Subscript | ast.Lambda) for n in ast.walk(tree)):
            raise ValueError(f"reward {spec!r}: attributes, indexing and lambdas are not allowed")
        self.used = used

    def __call__(self, now: Any, nxt: Any, last: np.ndarray) -> np.ndarray:
        """Rewards (float64, one per row of ``now``/``nxt``: tables, or for an expression
        also arrays by variable)."""
        if callable(self.spec):
            out = self.spec(now.reset_index(drop=True), nxt.reset_index(drop=True))
        else:
            out = self._evaluate(now, nxt, last)
        out = np.broadcast_to(np.asarray(out, dtype=np.float64), (len(last),))
        return out.copy()

    def _evaluate(self, now: pd.DataFrame, nxt: pd.DataFrame, last: np.ndarray) -> Any:
        require("rl", "a reward expression")
        from simpleeval import DEFAULT_OPERATORS, EvalWithCompoundTypes

        names: dict[str, Any] = {c: _values(now[c]) for c in now if c in self.used}
        names |= {c + NEXT: _values(nxt[c]) for c in nxt if c + NEXT in self.used}
        names["last"] = last.astype(np.float64)
        operators = dict(DEFAULT_OPERATORS)
        operators[ast.USub] = lambda x: -np.asarray(x, dtype=np.float64)  # -(a < b) on bools
        operators[ast.Not] = lambda x: ~np.asarray(x, dtype=bool)
        evaluator = EvalWithCompoundTypes(operators=operators, functions=FUNCTIONS, names=names)
        try:
            return evaluator.eval(self.spec)
        except Exception as e:  # simpleeval's and numpy's errors alike: name the expression
            raise ValueError(f"reward {self.spec!r} failed: {type(e).__name__}: {e}") from None


def _values(col: Any) -> np.ndarray:
    """A column (a Series or an array) as numbers where it can be (missing -> NaN), else as
    its labels."""
    col = col if isinstance(col, pd.Series) else pd.Series(col)
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().sum() == col.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return col.to_numpy(dtype=object)
