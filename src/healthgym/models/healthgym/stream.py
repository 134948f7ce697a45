"""The default model on a Parquet cohort too big to hold whole (`--stream`, `ParquetShards`).

`fit_tokenizer` reads the file once, chunk by chunk (on rank 0 of a torchrun job), and fits
the tokenizer without holding the table:

- on every patient, exactly: each real variable's smallest and largest value, its distinct
  values while there are at most `bins` (it is then a few-valued variable, as in memory) and
  its decimals; the longest stay and the time origin; levels come from the schema;
- on a seeded sample of `tokenizer_sample` patients: the quantile grid of a binned real
  (its ends set to the exact range). With no more patients than that, the sample is the
  cohort, and the tokenizer equals `Tokenizer.fit` on the whole cohort.

`tokens` then reads only a process's own contiguous range of patients (`shard_range`)
and tokenizes it chunk by chunk into the smallest integer dtype that holds the vocabulary
(one byte per token with the default `bins`). A tie of a binned real takes the draw it would
take in `Tokenizer.transform` of the whole cohort (each binned column's stream is advanced
past the values before the range, which `fit_tokenizer` counts), so the tokens depend neither
on the chunks nor on the number of processes, and are the in-memory ones where the tokenizer
is the in-memory one.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ...data.parquet_shards import ParquetShards
from ...data.schema import Variable
from ...training.seeding import derive_seed
from ..encoding import MAX_DECIMALS
from .tokenizer import GRID, TokenColumn, Tokenizer

_SAMPLE = 11  #: seed tag of the tokenizer's sample of patients


@dataclass
class _Real:
    """One real variable's exact aggregates over the file, added up chunk by chunk."""

    bins: int
    lo: float = math.inf
    hi: float = -math.inf
    #: the sorted distinct values, None once there are more than `bins`
    distinct: np.ndarray | None = field(default_factory=lambda: np.empty(0))
    #: per number of decimals d, the largest |round(x, d) - x| (`encoding.data_decimals`)
    deviation: np.ndarray = field(default_factory=lambda: np.zeros(MAX_DECIMALS + 1))
    count: int = 0  #: values so far
    sample: list[np.ndarray] = field(default_factory=list)  #: values of sampled patients

    def add(self, x: np.ndarray, sampled: np.ndarray) -> None:
        """The present values `x` of a chunk; `sampled` marks those of sampled patients."""
        self.sample.append(x[sampled])
        if not len(x):
            return
        self.lo, self.hi = min(self.lo, x.min()), max(self.hi, x.max())
        if self.distinct is not None:
            self.distinct = np.union1d(self.distinct, x)
            self.distinct = self.distinct if len(self.distinct) <= self.bins else None
        for d in range(MAX_DECIMALS + 1):
            self.deviation[d] = max(self.deviation[d], np.abs(np.round(x, d) - x).max())
        self.count += len(x)

    def column(self, v: Variable, fine: int) -> TokenColumn:
        """The variable's token column, as `tokenizer.fit_column` fits it on every value but
        for a binned real's inner quantiles, which come from the sample."""
        missing = v.missing == "flag"
        if self.distinct is not None:  # few values: every one of them
            return TokenColumn(v.name, "values", self.distinct.tolist(), missing=missing)
        x = np.concatenate(self.sample)
        if not len(x):
            raise ValueError(
                f"column {v.name!r} has no value in the tokenizer's sample of patients: "
                "raise tokenizer_sample"
            )
        grid = np.quantile(x, np.linspace(0.0, 1.0, GRID))
        grid[0], grid[-1] = self.lo, self.hi
        tol = 1e-9 * max(1.0, abs(self.lo), abs(self.hi))
        decimals = next((d for d, dev in enumerate(self.deviation) if dev <= tol), None)
        return TokenColumn(v.name, "bins", [], self.bins, grid.tolist(), decimals, missing, fine)


def sample_patients(n: int, size: int, seed: int) -> np.ndarray:
    """(n,) True for the seeded sample of `size` patients the quantiles are fitted on."""
    chosen = np.ones(n, dtype=bool)
    if n > size:
        chosen[:] = False
        rng = np.random.default_rng(derive_seed(seed, _SAMPLE))
        chosen[rng.choice(n, size, replace=False)] = True
    return chosen


def fit_tokenizer(
    shards: ParquetShards, bins: int, fine: int, sample: int, seed: int, starts: list[int]
) -> tuple[Tokenizer, list[dict[str, int]]]:
    """The tokenizer (module docstring) and, for each patient index of `starts` (where each
    process's patients begin), the position in each binned column's tie stream there: the
    `draws` of `Tokenizer.transform`."""
    schema = shards.schema
    chosen = sample_patients(len(shards), sample, seed)
    reals = {v.name: _Real(bins) for v in schema.variables if v.kind == "real"}
    before: list[dict[str, int]] = [{} for _ in starts]  # values before each start
    origins: Counter[int] = Counter()
    seen: set[str] = set()  # variables with a value
    for q, cohort in shards.cohorts():
        first = cohort.first_rows
        pid = np.cumsum(first) - 1
        m = int(pid[-1]) + 1
        origins.update(cohort.table[schema.time].to_numpy()[first].tolist())
        here = [(k, s - q) for k, s in enumerate(starts) if q <= s < q + m]
        for block, variables, rows in cohort.blocks():
            seen.update(v.name for v in variables if rows[v.name].notna().any())
            who = np.arange(m) if block == "static" else pid  # each row's patient
            for v in (v for v in variables if v.kind == "real"):
                x = rows[v.name].to_numpy(dtype=float)
                present = ~np.isnan(x)
                upto = np.r_[0, np.cumsum(np.bincount(who[present], minlength=m))]
                for k, at in here:
                    before[k][v.name] = reals[v.name].count + int(upto[at])
                reals[v.name].add(x[present], chosen[q + who[present]])
    empty = [v.name for v in schema.variables if v.name not in seen]
    if empty:  # each chunk may lack a variable (`Cohort(part=True)`), the cohort may not
        raise ValueError(f"{shards.path}: column {empty[0]!r} is entirely missing (all NaN)")
    tok = Tokenizer(schema, bins, fine)

    def fit(v: Variable, fine: int) -> TokenColumn:
        if v.kind == "real":
            return reals[v.name].column(v, fine)
        return TokenColumn(v.name, "levels", list(v.levels or []), missing=v.missing == "flag")

    tok.set_columns(fit)
    tok.max_length = int(shards.lengths.max())
    top = max(origins.values())
    tok.time_origin = int(min(t for t, k in origins.items() if k == top))  # as `common_start`
    draws, at = [{} for _ in starts], 0  # the binned columns take the stream in token order
    for c in (c for c in [*tok.static_columns, *tok.dynamic_columns] if c.kind == "bins"):
        for k, d in enumerate(draws):
            d[c.name] = at + before[k][c.name]
        at += reals[c.name].count
    return tok, draws


def tokens(
    shards: ParquetShards,
    tokenizer: Tokenizer,
    draws: dict[str, int],
    seed: int,
    start: int,
    stop: int,
    hold: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Static (n, S) and dynamic (n, T, D) tokens of patients [start, stop), read chunk by
    chunk; ties drawn from `seed`'s streams at `draws`, as `Tokenizer.transform` of the
    whole cohort draws them (`hold`: see there)."""
    static = np.zeros((stop - start, len(tokenizer.static_vocab)), _compact(tokenizer.static_vocab))
    dynamic = np.zeros(
        (stop - start, tokenizer.max_length, len(tokenizer.dynamic_vocab)),
        _compact(tokenizer.dynamic_vocab),
    )
    draws = dict(draws)
    for q, cohort in shards.cohorts(start, stop):
        t = tokenizer.transform(cohort, seed, draws, hold)
        i, m = q - start, len(t.lengths)
        static[i : i + m], dynamic[i : i + m] = t.static, t.dynamic
    return static, dynamic


def _compact(vocab: list[int]) -> np.dtype:
    """The smallest integer dtype (that torch indexes with) holding every token of `vocab`."""
    top = max(vocab) - 1
    return next(np.dtype(t) for t in (np.uint8, np.int16, np.int32) if top <= np.iinfo(t).max)
