"""Cohort <-> arrays, exactly invertible.

Each patient becomes a static row (N, S) and a padded sequence (N, T, D) with a step mask.
Within each block reals come first (Box-Cox/log1p then min-max to [0, 1], as Health Gym v1)
and then one one-hot span per binary/categorical variable. A variable with `missing: flag`
gets a binary `<name>__measured` span after it; its gaps are imputed (carry forward within
the patient, then the training median or mode) and decoding puts NaN back where the flag
is 0. Decoding accepts any generator output: spans are argmaxed, reals clipped to [0, 1], then
rounded to the decimals the training values carry (GCS 3..15 stays whole).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.atomic import write_text_atomic
from ..data.cohort import Cohort, level_codes
from ..data.constraints import enforce
from ..data.schema import Schema, Variable

BOXCOX_EPS = 1e-3  # Health Gym v1 applies Box-Cox to x + 1e-3 so zeros are allowed
# The MLE lambda is clipped to this range: beyond it the inverse loses digits to cancellation
# ((lambda*z + 1) ** (1/lambda) with lambda*z near -1); skewed clinical variables sit well inside.
BOXCOX_LAMBDA_RANGE = (-2.0, 2.0)
FLAG_SUFFIX = "__measured"


@dataclass
class Column:
    """One encoded variable: where it sits in its block and how to invert it."""

    name: str  # variable name, or "<variable>__measured" for a flag
    kind: str  # real | binary | categorical
    start: int
    end: int
    levels: list[Any] | None = None  # spans; flags have [0, 1]
    transform: str = "none"
    lam: float = 0.0  # Box-Cox lambda
    lo: float = 0.0  # min of the transformed training values
    hi: float = 1.0  # max of the transformed training values
    xmin: float = 0.0  # training range in original units: decoded reals stay inside it
    xmax: float = 1.0
    fill: Any = None  # imputation value (median or mode) in original units
    flag_of: str | None = None  # for flags: the variable they mark
    #: decoded reals are rounded to the training values' decimals (None: not rounded, as in
    #: encoder files written before this field)
    decimals: int | None = None

    def __post_init__(self) -> None:  # a file's sizes are checked before anything is built
        check_decimals(self.decimals, f"column {self.name!r}")


@dataclass
class EncodedCohort:
    """Arrays of a cohort. Padding steps (mask False) hold zeros."""

    ids: np.ndarray  # (N,)
    start: np.ndarray  # (N,) first step of each patient
    static: np.ndarray  # (N, S) float64
    dynamic: np.ndarray  # (N, T, D) float64
    mask: np.ndarray  # (N, T) bool

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=1)


class Encoder:
    """Fitted, invertible map between a cohort and its static/dynamic arrays."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.static_columns: list[Column] = []
        self.dynamic_columns: list[Column] = []
        self.max_length = 0
        self.time_origin = 0

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, cohort: Cohort) -> Encoder:
        """Fit transforms, levels and imputation values on a training cohort."""
        cohort.require_schema(self.schema, "encoder")
        for block, variables, rows in cohort.blocks():
            setattr(self, f"{block}_columns", fit_columns(variables, rows.__getitem__))
        self.max_length = check_steps(int(cohort.lengths.max()), "the cohort")
        self.time_origin = cohort.common_start
        return self

    @property
    def n_static(self) -> int:
        return self.static_columns[-1].end if self.static_columns else 0

    @property
    def n_dynamic(self) -> int:
        return self.dynamic_columns[-1].end if self.dynamic_columns else 0

    # ---- encoding ----------------------------------------------------------------------------
    def transform(self, cohort: Cohort) -> EncodedCohort:
        """Arrays of `cohort` under the fitted transforms (any number of patients, length <= T)."""
        self._check_fitted()
        cohort.require_schema(self.schema, "encoder")
        table, first = cohort.table, cohort.first_rows
        pid = np.cumsum(first) - 1
        n = int(pid[-1]) + 1
        times = table[self.schema.time].to_numpy()
        start = times[first]
        pos = times - start[pid]
        lengths = np.bincount(pid, minlength=n)
        t_max = max(int(lengths.max()), self.max_length)
        mask = np.arange(t_max)[None, :] < lengths[:, None]
        static = np.zeros((n, self.n_static))
        self._encode_block(table.loc[first], None, self.static_columns, static)
        dynamic = np.zeros((n, t_max, self.n_dynamic))
        rows = np.zeros((len(table), self.n_dynamic))
        self._encode_block(table, pid, self.dynamic_columns, rows)
        dynamic[pid, pos] = rows
        return EncodedCohort(table[self.schema.id].to_numpy()[first], start, static, dynamic, mask)

    def _encode_block(
        self, table: pd.DataFrame, pid: np.ndarray | None, columns: list[Column], out: np.ndarray
    ) -> None:
        for c in columns:
            if c.flag_of is not None:
                measured = table[c.flag_of].notna().to_numpy()
                out[:, c.start + 1] = measured
                out[:, c.start] = ~measured
                continue
            col = table[c.name]
            if col.isna().any():
                if pid is not None:  # carry forward within the patient
                    col = col.groupby(pid, sort=False).ffill()
                col = col.where(col.notna(), c.fill)
            if c.kind == "real":
                out[:, c.start] = _to_unit(col.to_numpy(dtype=float), c)
            else:
                codes = level_codes(col, c.levels)
                out[np.arange(len(codes)), c.start + codes] = 1.0

    # ---- decoding ----------------------------------------------------------------------------
    def inverse_transform(
        self,
        static: np.ndarray,
        dynamic: np.ndarray,
        lengths: np.ndarray | None = None,
        *,
        ids: np.ndarray | None = None,
        start: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """A long table from arrays; `static` may be (N, S) or per step (N, T, S).

        Any values are accepted: spans are argmaxed, reals clipped to the fitted range.
        Fresh ids 1..N and the training's first step are used unless given.
        """
        self._check_fitted()
        n, t_max = dynamic.shape[:2]
        if static.ndim == 2:
            static = np.broadcast_to(static[:, None, :], (n, t_max, static.shape[-1]))
        if static.shape[:2] != (n, t_max) or static.shape[2] != self.n_static:
            raise ValueError(
                f"static block has shape {static.shape}, expected (N, [T,] {self.n_static})"
            )
        if dynamic.shape[2] != self.n_dynamic:
            raise ValueError(
                f"dynamic block has shape {dynamic.shape}, expected (N, T, {self.n_dynamic})"
            )
        lengths = np.full(n, t_max) if lengths is None else np.asarray(lengths, dtype=int)
        if np.any(lengths < 1) or np.any(lengths > t_max):
            raise ValueError(f"lengths must lie in 1..{t_max}")
        ids = np.arange(1, n + 1) if ids is None else np.asarray(ids)
        start = np.full(n, self.time_origin) if start is None else np.asarray(start)
        pid = np.repeat(np.arange(n), lengths)
        pos = np.arange(len(pid)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out: dict[str, Any] = {self.schema.id: ids[pid], self.schema.time: start[pid] + pos}
        decoded = self._decode_block(static[pid, pos], self.static_columns)
        decoded |= self._decode_block(dynamic[pid, pos], self.dynamic_columns)
        for v in self.schema.variables:
            out[v.name] = decoded[v.name]
        return enforce(pd.DataFrame(out), self.schema)  # declared constraints hold

    def _decode_block(self, rows: np.ndarray, columns: list[Column]) -> dict[str, np.ndarray]:
        values: dict[str, np.ndarray] = {}
        for c in columns:
            block = rows[:, c.start : c.end]
            if c.kind == "real":
                values[c.name] = _from_unit(block[:, 0], c)
            elif c.flag_of is not None:
                missing = block.argmax(axis=1) == 0
                col = values[c.flag_of]
                if col.dtype == object:
                    col[missing] = None
                else:
                    col[missing] = np.nan
            else:
                values[c.name] = np.asarray(c.levels, dtype=object)[block.argmax(axis=1)]
        return values

    def decode(self, encoded: EncodedCohort, *, strict: bool = True) -> Cohort:
        """The cohort an EncodedCohort stands for (inverse of `transform`)."""
        table = self.inverse_transform(
            encoded.static, encoded.dynamic, encoded.lengths, ids=encoded.ids, start=encoded.start
        )
        return Cohort(table, self.schema, strict=strict)

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "schema": self.schema.to_dict(),
            "max_length": self.max_length,
            "time_origin": self.time_origin,
            "static_columns": [vars(c) for c in self.static_columns],
            "dynamic_columns": [vars(c) for c in self.dynamic_columns],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Encoder:
        enc = cls(Schema.from_dict(d["schema"]))
        enc.max_length = check_steps(d["max_length"], "max_length")
        enc.time_origin = int(d["time_origin"])
        enc.static_columns = _placed([Column(**c) for c in d["static_columns"]])
        enc.dynamic_columns = _placed([Column(**c) for c in d["dynamic_columns"]])
        return enc

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Encoder:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ValueError(f"{path}: encoder file not found") from None
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a valid healthgym encoder ({e})") from None

    def _check_fitted(self) -> None:
        if self.max_length == 0:
            raise RuntimeError("the encoder is not fitted: call fit(cohort) first")


def fit_columns(variables: list[Variable], values: Callable[[str], pd.Series]) -> list[Column]:
    """The fitted columns of one block, laid out: reals, then spans, then missingness flags.

    ``values(name)`` is the variable's training values (one per row of the block, as
    ``Cohort`` normalises them); it is called once per real or span variable.
    """
    columns = [_fit_real(values(v.name), v) for v in variables if v.kind == "real"]
    columns += [_fit_span(values(v.name), v) for v in variables if v.kind != "real"]
    columns += [
        Column(v.name + FLAG_SUFFIX, "binary", 0, 0, [0, 1], flag_of=v.name)
        for v in variables
        if v.missing == "flag"
    ]
    _place(columns)
    return columns


def _placed(columns: list[Column]) -> list[Column]:
    """``columns`` read from a file, checked to lie where their levels put them (so a file's
    start/end cannot declare a wider design than its levels)."""
    declared = [(c.start, c.end) for c in columns]
    for c in columns:
        if c.kind != "real" and not c.levels:
            raise ValueError(f"column {c.name!r}: a {c.kind} column needs its levels")
    _place(columns)
    for c, (start, end) in zip(columns, declared, strict=True):
        if (start, end) != (c.start, c.end):
            raise ValueError(
                f"column {c.name!r} declares columns {start}..{end}; its kind and levels "
                f"place it at {c.start}..{c.end}"
            )
    return columns


def _place(columns: list[Column]) -> None:
    """Lay out columns one after another; spans are as wide as their levels."""
    at = 0
    for c in columns:
        width = 1 if c.kind == "real" else len(c.levels)
        c.start, c.end = at, at + width
        at += width


def _fit_span(col: pd.Series, v: Any) -> Column:
    present = col.dropna()
    fill = present.mode().iloc[0] if len(present) else v.levels[0]
    fill = fill.item() if isinstance(fill, np.generic) else fill
    return Column(v.name, v.kind, 0, 0, list(v.levels), fill=fill)


def _fit_real(col: pd.Series, v: Any) -> Column:
    x = col.dropna().to_numpy(dtype=float)
    c = Column(v.name, "real", 0, 0, transform=v.transform, fill=float(np.median(x)))
    c.xmin, c.xmax = float(x.min()), float(x.max())
    c.decimals = data_decimals(x)
    if v.transform == "boxcox":
        if np.ptp(x) > 0:
            from scipy import stats  # 1.5 s to import: only where a lambda is fitted

            c.lam = float(np.clip(stats.boxcox(x + BOXCOX_EPS)[1], *BOXCOX_LAMBDA_RANGE))
        else:
            c.lam = 1.0
    if v.transform == "none":
        if x.min() < 0 or x.max() > 1:
            raise ValueError(f"column {v.name!r}: transform none needs values in [0, 1]")
        return c
    z = _forward(x, c)
    c.lo, c.hi = float(z.min()), float(z.max())
    return c


def _forward(x: np.ndarray, c: Column) -> np.ndarray:
    if c.transform == "boxcox":
        from scipy import special  # 0.1 s to import: only where a column is Box-Cox scaled

        return special.boxcox(x + BOXCOX_EPS, c.lam)
    if c.transform == "log1p":
        return np.log1p(x)
    return x


def _to_unit(x: np.ndarray, c: Column) -> np.ndarray:
    span = c.hi - c.lo
    return (_forward(x, c) - c.lo) / span if span > 0 else np.zeros_like(x)


def _from_unit(y: np.ndarray, c: Column) -> np.ndarray:
    z = c.lo + np.clip(np.nan_to_num(y, nan=0.5), 0.0, 1.0) * (c.hi - c.lo)
    if c.transform == "boxcox":
        from scipy import special

        z = special.inv_boxcox(z, c.lam) - BOXCOX_EPS
    elif c.transform == "log1p":
        z = np.expm1(z)
    z = np.clip(z, c.xmin, c.xmax)
    return z if c.decimals is None else np.round(z, c.decimals)


#: Decoded reals are rounded to at most this many decimals (more: not rounded).
MAX_DECIMALS = 6
#: The longest stay (steps) a model trains on or a run folder may declare: sampling memory
#: grows with it, so a run folder from elsewhere cannot ask for unbounded memory.
MAX_STEPS = 100_000


#: Patient-steps one sampling batch holds at most: a batch of long stays has fewer patients,
#: so sampling memory stays bounded whatever the stays' length.
STEPS_PER_BATCH = 2**19


def patients_per_batch(batch_size: int, length: int) -> int:
    """Patients in one sampling batch of stays up to ``length`` steps (`STEPS_PER_BATCH`)."""
    return max(1, min(batch_size, STEPS_PER_BATCH // max(1, length)))


def check_count(value: object, low: int, high: int, what: str) -> int:
    """``value`` if it is an integer in low..high, else a ValueError naming ``what`` (a size
    read from a file is checked before anything of that size is built)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


def check_steps(max_length: object, where: str) -> int:
    """``max_length`` in 1..MAX_STEPS (the stays healthgym models), else a ValueError."""
    return check_count(max_length, 1, MAX_STEPS, f"{where}: the longest stay (steps)")


def check_decimals(decimals: object, where: str) -> None:
    """ValueError unless ``decimals`` is None or an integer in 0..MAX_DECIMALS."""
    if decimals is not None:
        check_count(decimals, 0, MAX_DECIMALS, f"{where}: decimals")


def data_decimals(x: np.ndarray) -> int | None:
    """The fewest decimals (0..MAX_DECIMALS) that every value of ``x`` has, to within
    1e-9 of the largest magnitude; None when the values have more."""
    for d in range(MAX_DECIMALS + 1):
        if np.allclose(np.round(x, d), x, rtol=0, atol=1e-9 * max(1.0, np.abs(x).max())):
            return d
    return None
