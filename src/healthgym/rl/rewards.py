"""Rewards for offline-RL datasets and the patient simulator.

A reward is an expression over a step's variables and the next step's (``MAP_next`` is
MAP at the next step), for example ``-(MAP_next < 65)``, ``(MAP_next < 65) and (Lactate_next
> 2)``, ``-(HR_next - 80) ** 2 / 100`` or ``where(in_hospital_death == 1, -1, 0) * last``,
evaluated on whole columns at once by the evaluator below (never Python ``eval``), or a
Python callable ``fn(now, next) -> array`` taking two DataFrames (one row per transition).

An expression holds: the variables, NAME_next, ``last`` (1 on a stay's last transition),
numbers and quoted levels; ``+ - * / // %``, ``**`` with a number of at most
`MAX_EXPONENT` as the exponent; comparisons (a level by name: ``Gender == 'Female'``;
``< <= > >=`` on numbers only); ``and``, ``or``, ``not`` (element by element); and the
functions in `FUNCTIONS`. Booleans count as 0/1. Anything else (attributes, indexing,
comprehensions, other calls, arithmetic on levels) is refused when the reward is made, or
names the expression and the variable when it runs. Every operation is on arrays of one
value per transition, so evaluation is bounded in time and memory.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from ..data.schema import Schema

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
#: The largest exponent of ``**`` (larger powers of values overflow to inf anyway).
MAX_EXPONENT = 16
#: The longest expression (characters): a reward is a formula, not a program.
MAX_LENGTH = 2000

_ARITHMETIC = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.FloorDiv: np.floor_divide,
    ast.Mod: np.mod,
}
_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUAL = {ast.Eq: operator.eq, ast.NotEq: operator.ne}
_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Name, ast.Load,
    ast.Constant, ast.Call, ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Pow,
    *_ARITHMETIC, *_ORDER, *_EQUAL,
)  # fmt: skip


class Reward:
    """A checked reward: ``Reward("-(MAP_next < 65)", names)(now, nxt, last)`` -> (n,)."""

    def __init__(self, spec: str | Callable[..., Any], names: list[str]) -> None:
        self.spec = spec
        self.used: set[str] = set()  # the names an expression reads (only those are converted)
        if callable(spec):
            return
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError("reward must be an expression (text) or a callable")
        if len(spec) > MAX_LENGTH:
            raise ValueError(f"reward is {len(spec)} characters long: at most {MAX_LENGTH}")
        try:
            tree = ast.parse(spec.strip(), mode="eval")
        except SyntaxError as e:
            raise ValueError(f"reward {spec!r} is not an expression: {e.msg}") from None
        for node in ast.walk(tree):  # constructs first: a comprehension's names are its own
            if not isinstance(node, (*_ALLOWED, ast.Attribute, ast.Subscript, ast.Lambda)):
                raise ValueError(f"reward {spec!r}: {type(node).__name__} is not allowed")
        known = {*names, *(n + NEXT for n in names), "last", *FUNCTIONS}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        unknown = sorted(used - known)
        if unknown:
            raise ValueError(
                f"reward {spec!r} names {unknown}: use the cohort's variables, NAME{NEXT} for "
                f"the next step, 'last', and the functions {sorted(FUNCTIONS)}"
            )
        for node in ast.walk(tree):
            _check_node(node, spec)
        self.tree, self.used = tree, used - set(FUNCTIONS)

    def __call__(self, now: Any, nxt: Any, last: np.ndarray) -> np.ndarray:
        """Rewards (float64, one per row of ``now``/``nxt``: tables, or for an expression
        also arrays by variable)."""
        if callable(self.spec):
            out = self.spec(now.reset_index(drop=True), nxt.reset_index(drop=True))
        else:
            out = self._evaluate(now, nxt, last)
        out = np.broadcast_to(np.asarray(out, dtype=np.float64), (len(last),))
        return out.copy()

    def _evaluate(self, now: Any, nxt: Any, last: np.ndarray) -> Any:
        names: dict[str, Any] = {c: _values(now[c]) for c in now if c in self.used}
        names |= {c + NEXT: _values(nxt[c]) for c in nxt if c + NEXT in self.used}
        names["last"] = last.astype(np.float64)
        try:
            with np.errstate(all="ignore"):  # inf and NaN are results, not errors
                return _Evaluation(names, str(self.spec)).run(self.tree.body)
        except (TypeError, OverflowError, ZeroDivisionError) as e:
            raise ValueError(f"reward {self.spec!r} failed: {e}") from None


def warn_of_leaks(reward: Reward, schema: Schema, hidden: Sequence[str]) -> None:
    """Warn where the observations show a static the schema marks as an outcome (known only
    after the stay: a policy would see the answer), or the reward reads another observed
    static (which might be one)."""
    shown = [v.name for v in schema.static if v.name not in hidden]
    marked = sorted(n for n in shown if schema[n].outcome)
    if marked:
        warnings.warn(
            f"the observations show {marked}, which the schema marks as outcomes known only "
            f"after the stay: a policy would see the answer; hide them (--hide "
            f"{','.join(marked)} / hidden=[...])",
            stacklevel=3,
        )
    read = {n.removesuffix(NEXT) for n in reward.used}
    seen = sorted(read & set(shown) - set(marked))
    if seen:
        warnings.warn(
            f"the reward reads {seen}, which the observations also show: if one is an outcome "
            f"known only after the stay, hide it (--hide / hidden=[...])",
            stacklevel=3,
        )


def warn_of_fixed_ends(reward: Reward, statics: list[str], outcomes: list[str]) -> None:
    """Warn where the reward reads the stay's end (`last`), a static or an outcome (a
    variable of the schema's last-only rows) of a model that draws each stay's length with
    its statics: these are fixed at `reset`, so no policy changes them."""
    read = {n.removesuffix(NEXT) for n in reward.used}
    fixed = sorted(read & ({"last", *statics, *outcomes}))
    if fixed:
        warnings.warn(
            f"the reward reads {fixed}, but the run draws each stay's length (and so its "
            "outcome row) with the statics at reset: no policy changes them. Train with "
            "--preset simulator (end='drawn') for outcomes that respond to treatment",
            stacklevel=3,
        )


def _check_node(node: ast.AST, spec: str) -> None:
    """ValueError unless ``node`` is a construct an expression may hold (see the module)."""
    if isinstance(node, ast.Attribute | ast.Subscript | ast.Lambda):
        raise ValueError(f"reward {spec!r}: attributes, indexing and lambdas are not allowed")
    if not isinstance(node, _ALLOWED):
        raise ValueError(f"reward {spec!r}: {type(node).__name__} is not allowed in a reward")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise ValueError(f"reward {spec!r}: call only {sorted(FUNCTIONS)}")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        power = node.right
        if isinstance(power, ast.UnaryOp) and isinstance(power.op, ast.USub | ast.UAdd):
            power = power.operand
        if not (isinstance(power, ast.Constant) and isinstance(power.value, int | float)):
            raise ValueError(f"reward {spec!r}: the exponent of ** must be a number")
        if not abs(power.value) <= MAX_EXPONENT:
            raise ValueError(f"reward {spec!r}: exponents are at most {MAX_EXPONENT}")
    if isinstance(node, ast.Constant) and not isinstance(node.value, int | float | str):
        raise ValueError(f"reward {spec!r}: {node.value!r} is not a number or a level")


class _Evaluation:
    """One evaluation of a checked expression tree on arrays by name."""

    def __init__(self, names: dict[str, Any], spec: str) -> None:
        self.names, self.spec = names, spec

    def run(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, str) else float(node.value)
        if isinstance(node, ast.Name):
            return FUNCTIONS[node.id] if node.id in FUNCTIONS else self.names[node.id]
        if isinstance(node, ast.UnaryOp):
            x = self.run(node.operand)
            if isinstance(node.op, ast.Not):
                return ~self.truth(x, node.operand)
            x = self.number(x, node.operand)
            return -x if isinstance(node.op, ast.USub) else x
        if isinstance(node, ast.BoolOp):
            parts = [self.truth(self.run(v), v) for v in node.values]
            join = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = parts[0]
            for part in parts[1:]:
                out = join(out, part)
            return out
        if isinstance(node, ast.BinOp):
            a = self.number(self.run(node.left), node.left)
            b = self.number(self.run(node.right), node.right)
            if isinstance(node.op, ast.Pow):
                return np.power(a, b)
            return _ARITHMETIC[type(node.op)](a, b)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            args = [self.run(a) for a in node.args]
            return FUNCTIONS[node.func.id](*args)  # type: ignore[attr-defined]
        raise ValueError(f"reward {self.spec!r}: {type(node).__name__} is not allowed")

    def compare(self, node: ast.Compare) -> Any:
        left, out = self.run(node.left), None
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.run(right_node)
            if type(op) in _EQUAL and (_is_text(left) or _is_text(right)):  # levels by name
                result = _EQUAL[type(op)](np.asarray(left, dtype=object), right)
                result = np.asarray(result, dtype=bool)
            elif type(op) in _EQUAL:
                result = _EQUAL[type(op)](self.number(left, node.left), right)
            else:
                a, b = self.number(left, node.left), self.number(right, right_node)
                result = _ORDER[type(op)](a, b)
            out = result if out is None else np.logical_and(out, result)
            left = right
        return out

    def number(self, x: Any, node: ast.AST) -> Any:
        """``x`` as floats, or a ValueError naming the levels (text) it holds."""
        try:
            return np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError):
            what = ast.unparse(node)
            raise ValueError(
                f"reward {self.spec!r}: {what} holds levels (text), not numbers: compare it "
                f"with a level ({what} == '...') instead"
            ) from None

    def truth(self, x: Any, node: ast.AST) -> Any:
        return self.number(x, node) != 0


def _is_text(x: Any) -> bool:
    """A level name, or a column of levels (labels, not numbers)."""
    return isinstance(x, str) or (isinstance(x, np.ndarray) and x.dtype == object)


def _values(col: Any) -> np.ndarray:
    """A column (a Series or an array) as numbers where it can be (missing -> NaN), else as
    its labels."""
    if isinstance(col, np.ndarray) and col.dtype.kind in "fiub":  # the simulator's reals
        return col.astype(np.float64)
    col = col if isinstance(col, pd.Series) else pd.Series(col)
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().sum() == col.notna().sum():
        return numeric.to_numpy(dtype=np.float64)
    return col.to_numpy(dtype=object)
