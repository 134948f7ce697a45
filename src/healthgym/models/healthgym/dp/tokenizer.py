"""The private tokenizer: every data-dependent part of the `Tokenizer` from noisy histograms
(the package docstring says which), the heads' start at their noisy counts, and the stays cut
to the noisy longest stay."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ....data.cohort import Cohort
from ..tokenizer import GRID, LENGTH, TokenColumn, Tokenizer
from .accountant import Plan

SHARES = {"quantiles": 0.45, "marginals": 0.25, "ranges": 0.2, "decimals": 0.03, "lengths": 0.07}
PER_DECADE = 1  #: range buckets per decade of magnitude
FALSE_KEEP = 1e-3  #: chance that noise alone keeps an empty bucket of a histogram
DECADES = (-3, 9)  #: magnitudes 1e-3 .. 1e9 have their own buckets; beyond: one each
QUANTILE_BINS = 32  #: histogram bins between a real variable's bounds
MAX_START = 1023  #: first steps are counted in 0..MAX_START (clipped)
MAX_STAY = 2**20  #: stays are counted up to this many steps (clipped)


def _threshold(buckets: int) -> float:
    """Noisy counts (in noise SDs) that any of ``buckets`` empty buckets clears with chance
    FALSE_KEEP (a spurious bucket would stretch a range by decades)."""
    from scipy.stats import norm

    return float(norm.isf(FALSE_KEEP / buckets))


def _noisy(
    index: np.ndarray, weights: np.ndarray, size: int, sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """A histogram of ``index`` with these weights, plus N(0, sigma^2) in every bucket."""
    counts = np.bincount(index, weights=weights, minlength=size)[:size]
    return counts + rng.normal(0.0, sigma, size)


def _kept(counts: np.ndarray, sigma: float) -> np.ndarray:
    """Buckets whose noisy count clears the threshold; the largest one if none does."""
    keep = np.flatnonzero(counts >= _threshold(len(counts)) * sigma)
    return keep if len(keep) else np.array([int(np.argmax(counts))])


_MAGNITUDES = 10.0 ** (np.arange(DECADES[0] * PER_DECADE, DECADES[1] * PER_DECADE + 1) / PER_DECADE)
_K = len(_MAGNITUDES)  # positive buckets [m_k, m_k+1), the last one [m_K-1, inf)


def _range_bucket(x: np.ndarray) -> np.ndarray:
    """Signed log bucket of each value: 0.._K-1 negative (large to small), _K zero, then
    _K+1.. positive (small to large)."""
    a = np.abs(x)
    with np.errstate(divide="ignore"):
        k = np.floor(np.log10(np.maximum(a, 1e-300)) * PER_DECADE + 1e-9) - DECADES[0] * PER_DECADE
    k = np.clip(k, 0, _K - 1).astype(np.int64)
    out = np.where(x > 0, _K + 1 + k, _K - 1 - k)
    return np.where(a < _MAGNITUDES[0], _K, out)


def _bucket_edges(b: int) -> tuple[float, float]:
    top = _MAGNITUDES[-1] * 10 ** (1 / PER_DECADE)
    if b == _K:
        return 0.0, 0.0  # zero bucket: snapped to 0 (values in (-1e-3, 1e-3) are clipped)
    k = b - _K - 1 if b > _K else _K - 1 - b
    lo, hi = _MAGNITUDES[k], (_MAGNITUDES[k + 1] if k + 1 < _K else top)
    return (lo, hi) if b > _K else (-hi, -lo)


def _decimals(x: np.ndarray) -> np.ndarray:
    """Per value, the fewest decimals 0..6 that write it (7: more)."""
    out = np.full(len(x), 7)
    for d in range(6, -1, -1):
        ok = np.abs(np.round(x, d) - x) <= 1e-9 * np.maximum(1.0, np.abs(x))
        out[ok] = d
    return out


class _Scale:
    """The axis a real's quantile histogram is even on: log for a schema-declared skewed
    (boxcox/log1p) variable, else linear; bounds lo..hi."""

    def __init__(self, lo: float, hi: float, log: bool) -> None:
        self.lo, self.hi, self.log = lo, hi, log
        self.c = max((hi - lo) * 1e-3, 1e-12)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.log(x - self.lo + self.c) if self.log else x

    def inverse(self, s: np.ndarray) -> np.ndarray:
        return np.exp(s) - self.c + self.lo if self.log else s


def _quantile_grid(
    x: np.ndarray, w: np.ndarray, lo: float, hi: float, log: bool, sigma: float, rng: Any
) -> list[float]:
    """GRID quantiles of the noisy patient-weighted histogram of x (clipped to lo..hi)."""
    from sklearn.isotonic import IsotonicRegression

    if not hi > lo:
        return [float(lo)] * GRID
    scale = _Scale(lo, hi, log)
    edges = np.linspace(scale(np.array(lo)), scale(np.array(hi)), QUANTILE_BINS + 1)
    s = scale(np.clip(x, lo, hi))
    at = ((s - edges[0]) / (edges[-1] - edges[0]) * QUANTILE_BINS).astype(np.int64)
    index = np.clip(at, 0, QUANTILE_BINS - 1)
    counts = _noisy(index, w, QUANTILE_BINS, sigma, rng)
    cum = np.r_[0.0, np.cumsum(counts)]
    cum = IsotonicRegression(y_min=0.0).fit_transform(np.arange(len(cum)), cum)
    if not cum[-1] > 0:  # nothing but noise: uniform on the scale
        cum = np.arange(len(cum), dtype=float)
    cdf = cum / cum[-1]
    u = np.linspace(0.0, 1.0, GRID)
    grid = scale.inverse(np.interp(u, cdf, edges))
    grid = np.clip(np.maximum.accumulate(grid), lo, hi)
    grid[0], grid[-1] = max(grid[0], lo), min(grid[-1], hi)
    return grid.tolist()


@dataclass
class _Real:
    """A real variable's values and their patient weights (each patient sums to <= 1)."""

    name: str
    x: np.ndarray
    weight: np.ndarray
    patient: np.ndarray  # the patient (row of first_rows) of each value


def _real_values(cohort: Cohort, name: str, static: bool) -> _Real:
    table = cohort.table
    pid = np.cumsum(cohort.first_rows) - 1
    col = table[name].to_numpy(dtype=float)
    if static:
        first = cohort.first_rows
        col, pid = col[first], pid[first]
    ok = np.isfinite(col)
    x, pid = col[ok], pid[ok]
    n = np.bincount(pid, minlength=int(pid.max(initial=-1)) + 1)
    return _Real(name, x, 1.0 / n[pid], pid)


def fit_tokenizer(
    cohort: Cohort, bins: int, fine: int, plan: Plan, rng: np.random.Generator
) -> tuple[Tokenizer, dict[str, Any]]:
    """A tokenizer whose data-dependent parts are noisy histograms (module docstring), and
    what it did: noise per histogram group, ranges taken from the schema or found, clipping."""
    schema = cohort.schema
    reals = [v for v in schema.variables if v.kind == "real"]
    need_range = [v for v in reals if v.min is None or v.max is None]
    groups = {
        "quantiles": len(reals),
        "ranges": len(need_range),
        "decimals": len(reals),
        "marginals": len(schema.variables),  # token frequencies: where the heads start
        "lengths": 3,  # stays by powers of two, exact stays, first steps
    }
    used = {g: SHARES[g] for g, k in groups.items() if k}
    rho = 1 / (2 * plan.tokenizer_noise**2)  # the zCDP of the whole release
    sigma = {g: math.sqrt(groups[g] / (2 * rho * used[g] / sum(used.values()))) for g in used}
    info: dict[str, Any] = {
        "noise_multiplier": plan.tokenizer_noise,
        "histogram_noise": {g: round(s, 4) for g, s in sigma.items()},
        "ranges": {},
    }
    columns: dict[str, TokenColumn] = {}
    for v in schema.variables:
        missing = v.missing == "flag"
        if v.kind != "real":
            columns[v.name] = TokenColumn(v.name, "levels", list(v.levels), missing=missing)
            continue
        r = _real_values(cohort, v.name, v.is_static)
        lo, hi, how = v.min, v.max, "schema"
        if v.min is None or v.max is None:
            counts = _noisy(_range_bucket(r.x), r.weight, 2 * _K + 1, sigma["ranges"], rng)
            kept = _kept(counts, sigma["ranges"])
            found = (_bucket_edges(int(kept.min()))[0], _bucket_edges(int(kept.max()))[1])
            lo = found[0] if lo is None else lo
            hi = found[1] if hi is None else hi
            how = "noisy log buckets" if v.min is None and v.max is None else "schema + noisy"
            if v.min is None and v.transform == "boxcox":
                lo = max(lo, 0.0)  # the schema says the values are not negative
            if hi < lo:
                lo, hi = (lo, lo) if v.min is not None else (hi, hi)
        lo, hi = float(lo), float(hi)
        info["ranges"][v.name] = {"min": lo, "max": hi, "from": how}
        log = v.transform in ("boxcox", "log1p") and lo >= 0
        grid = _quantile_grid(r.x, r.weight, lo, hi, log, sigma["quantiles"], rng)
        per_patient = np.zeros(len(cohort.first_rows.nonzero()[0]), dtype=np.int64)
        np.maximum.at(per_patient, r.patient, _decimals(r.x))
        present = np.bincount(r.patient, minlength=len(per_patient)) > 0
        counts = _noisy(
            per_patient[present], np.ones(int(present.sum())), 8, sigma["decimals"], rng
        )
        d = int(_kept(counts, sigma["decimals"]).max())
        fine_v = 1 if v.is_static else fine
        columns[v.name] = TokenColumn(
            v.name, "bins", [], bins, grid, None if d == 7 else d, missing, fine_v
        )
    tok = Tokenizer(schema, bins, fine)
    tok.set_columns(lambda v, _: columns[v.name])  # in `Tokenizer.fit`'s order: actions last
    tok.max_length, tok.time_origin, stays = _stay_and_origin(cohort, sigma["lengths"], rng)
    info["marginals"] = _marginals(cohort, columns, sigma["marginals"], rng)
    info["marginals"][LENGTH] = np.round(stays[: tok.max_length], 1).tolist()
    info["max_length"], info["time_origin"] = tok.max_length, tok.time_origin
    return tok, info


def _marginals(
    cohort: Cohort, columns: dict[str, TokenColumn], sigma: float, rng: np.random.Generator
) -> dict[str, list[float]]:
    """Noisy patient-weighted counts for the heads: a categorical's levels (and missing); a
    real's values and missing values (its bins are equally likely by construction)."""
    first, out = cohort.first_rows, {}
    pid = np.cumsum(first) - 1
    weight = 1.0 / np.bincount(pid)[pid]  # a patient's rows weigh 1 together
    for v in cohort.schema.variables:
        c = columns[v.name]
        rows = cohort.table[v.name][first] if v.is_static else cohort.table[v.name]
        w = np.ones(int(first.sum())) if v.is_static else weight
        if c.kind == "levels":
            tokens, size = c.encode(rows, rng)[:, 0], c.n_tokens
        else:
            tokens, size = rows.isna().to_numpy().astype(np.int64), 2
        out[v.name] = np.round(_noisy(tokens, w, size, sigma, rng), 1).tolist()
    return out


def start_heads(model: nn.Module, tokenizer: Tokenizer, counts: dict[str, list[float]]) -> None:
    """Each head's bias at the log frequency of the noisy counts (negative counts as 0, plus
    a half); a fine token's head uniform (its sub-bins are equally likely by construction)."""

    def bias(c: TokenColumn, values: list[float], size: int) -> torch.Tensor:
        x = np.maximum(np.asarray(values, dtype=float), 0.0) + 0.5
        if c.kind == "bins":  # (values, missing) -> each bin's share, then missing
            x = np.r_[np.full(c.bins, x[0] / c.bins), x[1:2] if c.missing else []]
        x = x[:size]
        return torch.from_numpy(np.log(x / x.sum())).float()

    with torch.no_grad():
        for heads, cols in (
            (model.statics.heads, [*tokenizer.static_columns, tokenizer.length_column]),
            (model.sequence.heads, tokenizer.dynamic_columns),
        ):
            at = 0
            for c in cols:
                head = heads[at].free.bias
                head.copy_(bias(c, counts[c.name], len(head)).to(head.device))
                for extra in range(1, len(c.vocab)):
                    heads[at + extra].free.bias.fill_(-math.log(c.vocab[extra]))
                at += len(c.vocab)


def _stay_and_origin(
    cohort: Cohort, sigma: float, rng: np.random.Generator
) -> tuple[int, int, np.ndarray]:
    """The longest stay (noisy power-of-two buckets, then exact lengths below the bound),
    the time origin (noisy argmax of first steps in 0..MAX_START) and the noisy count of
    each stay length (1..bound)."""
    lengths = np.minimum(cohort.lengths.to_numpy(), MAX_STAY)
    ones = np.ones(len(lengths))
    k = np.ceil(np.log2(lengths)).astype(np.int64)
    top = int(math.log2(MAX_STAY)) + 1
    bound = 2 ** int(_kept(_noisy(k, ones, top, sigma, rng), sigma).max())
    exact = _noisy(np.minimum(lengths, bound) - 1, ones, bound, sigma, rng)
    longest = int(_kept(exact, sigma).max()) + 1
    starts = cohort.table[cohort.schema.time].to_numpy()[cohort.first_rows]
    counts = _noisy(np.clip(starts, 0, MAX_START).astype(np.int64), ones, MAX_START + 1, sigma, rng)
    return longest, int(np.argmax(counts)), exact


def cut_stays(cohort: Cohort, longest: int) -> Cohort:
    """The cohort with every stay cut to its first ``longest`` steps."""
    table, first = cohort.table, cohort.first_rows
    times = table[cohort.schema.time].to_numpy()
    pid = np.cumsum(first) - 1
    keep = times - times[first][pid] < longest
    if keep.all():
        return cohort
    out = object.__new__(Cohort)
    out.schema, out.table = cohort.schema, table[keep].reset_index(drop=True)
    return out
