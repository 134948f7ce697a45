"""Cohort <-> integer tokens, one token per variable per patient (statics) or per step.

The default model (`HealthGym`) is a likelihood model over these tokens, so every variable
becomes a small categorical: a binary or categorical variable's levels; a real variable with
few distinct values its exact values; any other real variable `bins` equal-probability
quantile bins (token k holds the training values with CDF in [k/bins, (k+1)/bins)). A
variable with `missing: flag` gets one more token, "missing", so missingness is generated
jointly with the values instead of imputed.

Ties (a value many training values share) spread over their CDF jump, except a dynamic
variable's with `transform(hold=True)`: its middle, so a recurring value keeps its tokens.
Decoding a quantile token draws u uniformly in its CDF interval and maps it through the
training quantile function (a grid of `GRID` quantiles, linearly interpolated), then rounds to
the decimals the training values carry: a model that gets the token frequencies right gets
the marginal distribution right, point masses (e.g. urine output 0) included. What the
tokenizer keeps of the data is aggregate: level lists, distinct values of few-valued
variables, and the quantile grid (its ends are the training minimum and maximum, as any
min-max encoder keeps).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...data.atomic import write_text_atomic
from ...data.cohort import Cohort, level_codes
from ...data.constraints import enforce
from ...data.schema import Schema, Variable
from ..encoding import check_count, check_decimals, check_steps, data_decimals
from .config import MAX_TOKENS

GRID = 1025  #: quantiles kept per binned real variable
LENGTH = "__length"  #: name of the length token


@dataclass
class TokenColumn:
    """One variable's tokens: values (levels or exact values) or a quantile grid."""

    name: str
    kind: str  # "levels" (binary/categorical), "values" (few-valued real), "bins" (real)
    values: list[Any]  # levels, or the distinct real values; empty for "bins"
    bins: int = 0  # number of quantile bins ("bins" only)
    grid: list[float] | None = None  # GRID training quantiles ("bins" only)
    decimals: int | None = None  # decoded reals are rounded to this ("bins" only)
    missing: bool = False  # the last token means "missing"
    fine: int = 1  # "bins": each bin split into this many sub-bins, a second token

    def __post_init__(self) -> None:  # a file's sizes are checked before anything is built
        where = f"token column {self.name!r}"
        if self.kind not in ("levels", "values", "bins"):
            raise ValueError(f"{where}: kind must be levels, values or bins, got {self.kind!r}")
        for name in ("bins", "fine"):
            check_count(getattr(self, name), 0, MAX_TOKENS, f"{where}: {name}")
        if self.kind == "bins" and (self.bins < 1 or self.fine < 1 or not self.grid):
            raise ValueError(f"{where}: bins needs bins >= 1, fine >= 1 and its grid")
        check_decimals(self.decimals, where)

    @property
    def n_tokens(self) -> int:
        """Size of the first (coarse) token's vocabulary."""
        return (self.bins if self.kind == "bins" else len(self.values)) + int(self.missing)

    @property
    def xmin(self) -> float:
        """Smallest training value of a real variable."""
        return float(self.grid[0] if self.kind == "bins" else min(self.values))

    @property
    def xmax(self) -> float:
        """Largest training value of a real variable."""
        return float(self.grid[-1] if self.kind == "bins" else max(self.values))

    @property
    def vocab(self) -> list[int]:
        """Vocabulary of each token this variable takes per row (coarse[, fine])."""
        return (
            [self.n_tokens, self.fine] if self.kind == "bins" and self.fine > 1 else [self.n_tokens]
        )

    @property
    def missing_token(self) -> int:
        if not self.missing:
            raise ValueError(f"{self.name!r} has no missing token (its schema says missing: none)")
        return self.n_tokens - 1

    def positions(self) -> list[list[float]]:
        """Where each token sits on its variable's scale, in [0, 1] (one list per token of
        `vocab`): bin centres, ranks of values and levels; 0 for the missing token."""

        def spread(k: int) -> list[float]:
            return [(i + 0.5) / k for i in range(k)]

        first = spread(self.bins) if self.kind == "bins" else spread(len(self.values))
        out = [first + [0.0] * int(self.missing)]
        return out + ([spread(self.fine)] if len(self.vocab) > 1 else [])

    # ---- one column ------------------------------------------------------------------------
    def encode(self, col: pd.Series, rng: np.random.Generator | None) -> np.ndarray:
        """(n, len(vocab)) int64 tokens; ties of a binned real spread uniformly over their CDF
        jump (`rng` None: placed at its middle). A missing value's fine token is 0."""
        isna = col.isna().to_numpy()
        if isna.any() and not self.missing:
            raise ValueError(f"column {self.name!r} has missing values but no missing token")
        out = np.zeros((len(col), len(self.vocab)), dtype=np.int64)
        out[:, 0] = self.n_tokens - 1
        present = col[~isna]
        if self.kind == "levels":
            codes = level_codes(present, self.values)
            bad = codes < 0
            if bad.any():
                raise ValueError(
                    f"column {self.name!r} has values {present[bad].unique().tolist()[:5]} "
                    f"outside its levels {self.values}"
                )
            out[~isna, 0] = codes
        elif self.kind == "values":
            x = present.to_numpy(dtype=float)
            known = np.asarray(self.values, dtype=float)
            idx = np.clip(np.searchsorted(known, x), 0, len(known) - 1)
            left = np.clip(idx - 1, 0, len(known) - 1)
            closer = np.abs(known[left] - x) < np.abs(known[idx] - x)
            out[~isna, 0] = np.where(closer, left, idx)
        else:
            u = _cdf(present.to_numpy(dtype=float), np.asarray(self.grid), rng)
            steps = np.minimum(
                (u * self.bins * self.fine).astype(np.int64), self.bins * self.fine - 1
            )
            out[~isna, 0] = steps // self.fine
            if self.fine > 1:
                out[~isna, 1] = steps % self.fine
        return out

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Values of `tokens` (n, len(vocab)): object array for levels, float for reals;
        missing -> None/NaN."""
        tokens = np.asarray(tokens).reshape(len(tokens), -1)
        fine = tokens[:, 1] if tokens.shape[1] > 1 else 0
        tokens = tokens[:, 0]
        missing = tokens == self.n_tokens - 1 if self.missing else np.zeros(len(tokens), bool)
        if self.kind == "levels":
            out = np.asarray(self.values + [None], dtype=object)[
                np.where(missing, len(self.values), tokens)
            ]
            return out
        if self.kind == "values":
            x = np.asarray(self.values, dtype=float)[np.where(missing, 0, tokens)]
        else:
            k = np.where(missing, 0, tokens * self.fine + fine).astype(float)
            u = (k + rng.random(len(tokens))) / (self.bins * self.fine)
            grid = np.asarray(self.grid)
            x = np.interp(u, np.linspace(0.0, 1.0, len(grid)), grid)
            if self.decimals is not None:
                x = np.round(x, self.decimals)
        return np.where(missing, np.nan, x)

    def token_of(self, value: Any) -> int:
        """The tokens (len(vocab),) of a requested value (the middle of its CDF jump for ties)."""
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return np.array([self.missing_token] + [0] * (len(self.vocab) - 1))
        return self.encode(pd.Series([value], dtype=object), None)[0]


def _cdf(x: np.ndarray, grid: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """u in [0, 1] with x = Q(u) for the interpolated quantile function Q on `grid`."""
    p = np.linspace(0.0, 1.0, len(grid))
    lo = np.searchsorted(grid, x, side="left")
    hi = np.searchsorted(grid, x, side="right")
    # On a flat stretch (a point mass) u is uniform over the stretch; otherwise interpolate.
    p_lo = p[np.clip(lo - 1, 0, len(p) - 1)]
    p_hi = p[np.clip(hi, 0, len(p) - 1)]
    tie = hi > lo
    g0 = grid[np.clip(lo - 1, 0, len(grid) - 1)]
    g1 = grid[np.clip(lo, 0, len(grid) - 1)]
    frac = np.divide(x - g0, g1 - g0, out=np.zeros_like(x), where=g1 > g0)
    u_interp = p_lo + np.clip(frac, 0, 1) * (p[np.clip(lo, 0, len(p) - 1)] - p_lo)
    jitter = np.full(len(x), 0.5) if rng is None else rng.random(len(x))
    u_tie = p_lo + jitter * (p_hi - p_lo)
    return np.clip(np.where(tie, u_tie, u_interp), 0.0, 1.0 - 1e-12)


def fit_column(
    col: pd.Series, kind: str, levels: list[Any] | None, missing: bool, bins: int, fine: int
) -> TokenColumn:
    """A TokenColumn for one variable's training values."""
    if kind != "real":
        return TokenColumn(col.name, "levels", list(levels or []), missing=missing)
    x = col.dropna().to_numpy(dtype=float)
    if len(x) == 0:
        raise ValueError(f"column {col.name!r} has no values to fit")
    distinct = np.unique(x)
    if len(distinct) <= bins:
        return TokenColumn(col.name, "values", distinct.tolist(), missing=missing)
    grid = np.quantile(x, np.linspace(0.0, 1.0, GRID))
    return TokenColumn(col.name, "bins", [], bins, grid.tolist(), data_decimals(x), missing, fine)


@dataclass
class TokenizedCohort:
    """Token arrays of a cohort; padding steps hold token 0 and are masked by `lengths`."""

    ids: np.ndarray  # (N,)
    start: np.ndarray  # (N,) first time step of each patient
    static: np.ndarray  # (N, S) int64
    dynamic: np.ndarray  # (N, T, D) int64
    lengths: np.ndarray  # (N,) int64


class Tokenizer:
    """Fitted map between a cohort and its token arrays (decoding draws within bins)."""

    def __init__(self, schema: Schema, bins: int = 32, fine: int = 32) -> None:
        if bins < 2 or fine < 1:
            raise ValueError(f"bins must be >= 2 and fine >= 1, got {bins} and {fine}")
        self.schema = schema
        self.bins, self.fine = bins, fine
        self.static_columns: list[TokenColumn] = []
        self.dynamic_columns: list[TokenColumn] = []
        self.max_length = 0
        self.time_origin = 0

    def fit(self, cohort: Cohort) -> Tokenizer:
        """Levels, distinct values and quantile grids from the training cohort."""
        cohort.require_schema(self.schema, "tokenizer")
        rows = {block: table for block, _, table in cohort.blocks()}

        def fit(v: Variable, fine: int) -> TokenColumn:
            col = rows["static" if v.is_static else "dynamic"][v.name]
            return fit_column(col, v.kind, v.levels, v.missing == "flag", self.bins, fine)

        self.set_columns(fit)
        self.max_length = check_steps(int(cohort.lengths.max()), "the cohort")
        self.time_origin = cohort.common_start
        return self

    def set_columns(self, fit: Callable[[Variable, int], TokenColumn]) -> None:
        """The static and dynamic columns in token order, each `fit(variable, fine tokens)`."""
        for block, variables in (("static", self.schema.static), ("dynamic", self.schema.dynamic)):
            # Fine tokens keep a value close to the patient's previous one; statics have no
            # previous value, and a fine static token would only help memorise patients.
            fine = 1 if block == "static" else self.fine
            # Treatments last within a step: a step's state is drawn before its action, so the
            # simulator (healthgym.rl.env) can set the action and draw the next state given it.
            variables = sorted(variables, key=lambda v: v.role == "action")
            setattr(self, f"{block}_columns", [fit(v, fine) for v in variables])

    @property
    def length_column(self) -> TokenColumn:
        """The number of steps, a token after the statics (token k: k + 1 steps)."""
        return TokenColumn(LENGTH, "levels", list(range(1, self.max_length + 1)))

    @property
    def static_vocab(self) -> list[int]:
        """Vocabulary per static token (the last: the length)."""
        return [v for c in [*self.static_columns, self.length_column] for v in c.vocab]

    @property
    def dynamic_vocab(self) -> list[int]:
        """Vocabulary per dynamic token."""
        return [v for c in self.dynamic_columns for v in c.vocab]

    @property
    def static_positions(self) -> list[list[float]]:
        """Per static token, its tokens' places on the variable's scale (`positions`)."""
        return [p for c in [*self.static_columns, self.length_column] for p in c.positions()]

    @property
    def static_coarse(self) -> list[bool]:
        """Per static token, whether it is its variable's first (coarse) token."""
        columns = [*self.static_columns, self.length_column]
        return [i == 0 for c in columns for i in range(len(c.vocab))]

    @property
    def dynamic_positions(self) -> list[list[float]]:
        """Per dynamic token, its tokens' places on the variable's scale."""
        return [p for c in self.dynamic_columns for p in c.positions()]

    @property
    def dynamic_groups(self) -> list[int]:
        """The variable (index) of each dynamic token."""
        return [g for g, c in enumerate(self.dynamic_columns) for _ in c.vocab]

    @property
    def dynamic_scales(self) -> list[tuple[int, int, int, bool]]:
        """Per dynamic token, its variable's (missing token or -1, B, F, ordered): a value of
        coarse token c and fine token f sits at (c + (f + 0.5) / F) / B on the variable's
        [0, 1] scale (B bins or distinct values, F sub-bins, 1 without a fine token; f = 0
        then); `ordered` is False for levels, which have no scale."""
        out = []
        for c in self.dynamic_columns:
            coarse = c.bins if c.kind == "bins" else len(c.values)
            fine = c.vocab[1] if len(c.vocab) > 1 else 1
            missing = c.n_tokens - 1 if c.missing else -1
            out += [(missing, coarse, fine, c.kind != "levels")] * len(c.vocab)
        return out

    def transform(
        self,
        cohort: Cohort,
        seed: int = 0,
        draws: dict[str, int] | None = None,
        hold: bool = True,
    ) -> TokenizedCohort:
        """Token arrays of `cohort` (ties in binned reals placed with `seed`).

        `hold`: ties of a dynamic binned real (a point mass: weight 80.0 kg, creatinine 1.0)
        take the middle of their CDF jump, so a value that recurs has the same tokens and one
        that persists reads as persisting; a draw per value would move it within the jump
        from step to step, teaching the model changes the data does not have (issue 15:
        half the demo's patients keep one weight, the model trained on drawn ties kept 4%).
        Decoding such a token gives the value back exactly. Without `hold` (release 0.1.0's
        tokens, the `before` benchmark), dynamic ties are drawn like static ones.

        One random stream serves every binned column in turn, each taking a draw per value.
        `draws` (a part of a larger cohort, e.g. a --stream chunk): where each binned column's
        draws start in that stream, so the part's tokens are the whole cohort's; advanced
        in place past the part's values, for the next part."""
        self._check_fitted()
        cohort.require_schema(self.schema, "tokenizer")
        rng = np.random.default_rng(seed)

        def stream(c: TokenColumn, values: pd.Series) -> np.random.Generator:
            if draws is None or c.kind != "bins":
                return rng
            own = np.random.default_rng(seed)
            own.bit_generator.advance(draws[c.name])  # type: ignore[attr-defined]  # PCG64's
            draws[c.name] += int(values.notna().sum())
            return own

        table, first = cohort.table, cohort.first_rows
        pid = np.cumsum(first) - 1
        times = table[self.schema.time].to_numpy()
        start = times[first]
        pos = times - start[pid]
        lengths = np.bincount(pid)
        n, t_max = len(lengths), max(int(lengths.max()), self.max_length)
        statics = table.loc[first]
        static = np.zeros((n, len(self.static_vocab)), dtype=np.int64)
        for c, at in _offsets(self.static_columns):
            static[:, at : at + len(c.vocab)] = c.encode(
                statics[c.name], stream(c, statics[c.name])
            )
        static[:, -1] = lengths - 1
        dynamic = np.zeros((n, t_max, len(self.dynamic_vocab)), dtype=np.int64)
        for c, at in _offsets(self.dynamic_columns):
            ties = None if hold else stream(c, table[c.name])
            dynamic[pid, pos, at : at + len(c.vocab)] = c.encode(table[c.name], ties)
        ids = table[self.schema.id].to_numpy()[first]
        return TokenizedCohort(ids, start, static, dynamic, lengths.astype(np.int64))

    def inverse_transform(
        self,
        static: np.ndarray,
        dynamic: np.ndarray,
        lengths: np.ndarray,
        *,
        ids: np.ndarray | None = None,
        seed: int = 0,
        hold: bool = False,
    ) -> pd.DataFrame:
        """The long table of token arrays: static (N, S) (its last token, the length, is not
        read: `lengths` is), dynamic (N, T, D), lengths (N,). `hold`: a binned real whose
        tokens are those of its patient's last observed value keeps that value (a value that
        persists, as real ones do, instead of a fresh draw within its sub-bin)."""
        self._check_fitted()
        rng = np.random.default_rng(seed)
        n = len(lengths)
        lengths = np.asarray(lengths, dtype=np.int64)
        ids = np.arange(1, n + 1) if ids is None else np.asarray(ids)
        pid = np.repeat(np.arange(n), lengths)
        pos = np.arange(len(pid)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out: dict[str, Any] = {
            self.schema.id: ids[pid],
            self.schema.time: self.time_origin + pos,
        }
        values = {
            c.name: c.decode(static[:, at : at + len(c.vocab)], rng)[pid]
            for c, at in _offsets(self.static_columns)
        }
        for c, at in _offsets(self.dynamic_columns):
            tokens = dynamic[pid, pos, at : at + len(c.vocab)]
            values[c.name] = c.decode(tokens, rng)
            if hold and c.kind == "bins":
                values[c.name] = held(values[c.name], tokens, pid)
        for v in self.schema.variables:
            out[v.name] = values[v.name]
        return enforce(pd.DataFrame(out), self.schema)  # declared constraints hold

    def column_at(self, name: str) -> tuple[TokenColumn, int]:
        """A variable's token column and where its tokens start: in the static tokens for a
        static variable, else in a step's dynamic tokens."""
        for columns in (self.static_columns, self.dynamic_columns):
            for c, at in _offsets(columns):
                if c.name == name:
                    return c, at
        raise KeyError(f"no variable {name!r} in the tokenizer")

    def decode_columns(
        self, columns: list[TokenColumn], tokens: np.ndarray, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Values by variable of token rows (n, tokens of `columns`), e.g. one step's dynamic
        tokens with `dynamic_columns`; no constraints applied (see `inverse_transform`)."""
        return {
            c.name: c.decode(tokens[:, at : at + len(c.vocab)], rng) for c, at in _offsets(columns)
        }

    # ---- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema.to_dict(),
            "bins": self.bins,
            "fine": self.fine,
            "static_columns": [asdict(c) for c in self.static_columns],
            "dynamic_columns": [asdict(c) for c in self.dynamic_columns],
            "max_length": self.max_length,
            "time_origin": self.time_origin,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        tok = cls(Schema.from_dict(d["schema"]), bins=d["bins"], fine=d["fine"])
        tok.static_columns = [TokenColumn(**c) for c in d["static_columns"]]
        tok.dynamic_columns = [TokenColumn(**c) for c in d["dynamic_columns"]]
        tok.max_length = check_steps(d["max_length"], "max_length")
        tok.time_origin = d["time_origin"]
        return tok

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a healthgym tokenizer file ({e})") from None

    def _check_fitted(self) -> None:
        if not self.dynamic_columns and not self.static_columns:
            raise RuntimeError("the tokenizer is not fitted: call fit(cohort)")


def held(values: np.ndarray, tokens: np.ndarray, pid: np.ndarray) -> np.ndarray:
    """`values` (rows of patients `pid`, in order) where each observed row whose tokens (rows,
    k) equal its patient's previous observed row's takes that row's value."""
    rows = np.flatnonzero(~np.isnan(values))
    same = (pid[rows][1:] == pid[rows][:-1]) & (tokens[rows][1:] == tokens[rows][:-1]).all(1)
    first = np.maximum.accumulate(np.where(np.r_[True, ~same], np.arange(len(rows)), 0))
    out = values.copy()
    out[rows] = values[rows[first]]
    return out


def _offsets(columns: list[TokenColumn]) -> list[tuple[TokenColumn, int]]:
    """Each column with the index of its first token in its block."""
    at, out = 0, []
    for c in columns:
        out.append((c, at))
        at += len(c.vocab)
    return out
