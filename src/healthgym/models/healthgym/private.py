"""Differential privacy for the default model: an (epsilon, delta) guarantee per patient.

`HealthGym(dp_epsilon=E)` trains the same network under a patient-level guarantee: two
cohorts that differ by one patient (all of the patient's steps; add or remove) give every
released output (tokenizer, weights, synthetic patients) with probabilities within a factor
e^E, up to delta. Everything the run computes from the real patients goes through one of
two Gaussian mechanisms, composed by one Renyi-DP accountant (Opacus' RDP analysis):

1. **The tokenizer** (`fit_tokenizer`): every data-dependent part is a noisy histogram in
   which each patient weighs at most 1 (a dynamic variable's values weigh 1/n each for a
   patient's n values), so each histogram has L2 sensitivity 1: the range of a real
   variable without declared `min` and `max` (signed decade buckets; those whose noisy
   count clears a threshold), its quantile grid (a 32-bin histogram between those bounds,
   made monotone by isotonic regression; bin edges and the decoding grid are its
   quantiles), its decimals (a histogram of each patient's decimals), each variable's
   missing or level shares (where the heads start), the longest stay (power-of-two then
   exact length buckets; the length head starts at them) and the time origin (a noisy
   argmax of first steps). Values outside a range are clipped to it; stays longer than the
   longest stay are cut. Together these cost `dp_tokenizer_share` of epsilon on their own
   (one Gaussian of noise multiplier `sigma_t`: zero-concentrated DP adds up).
   Levels, kinds and missing flags come from the schema, which is public input.
2. **DP-SGD** (`PrivateTrainer`): Poisson sampling (each patient in each step with
   probability q = batch_size / N), per-patient gradients (`torch.func`: a GRU written out
   step by step with nn.GRU's parameters, because vmap has no batching rule for the fused
   GRU), each of the two parts (the static model; the sequence model) clipped to
   `dp_max_grad_norm` C, Gaussian noise of SD sigma * C * sqrt(2) on each part (the pair
   has sensitivity C sqrt(2)), divided by the expected batch q N. sigma is the smallest
   noise multiplier for which the tokenizer and `dp_epochs` epochs of steps together cost at
   most epsilon; training stops when those steps are taken (or at `max_minutes`), and a
   step that would exceed the budget is never taken. There is no validation split and no
   early stopping (both would look at real patients), the heads start at the tokenizer's
   noisy counts (not the data's marginals), and the static model is trained in every step.

The noise and the Poisson batches come from a generator seeded from the operating system's
entropy, never from `seed`, and are not saved: a resumed run draws fresh ones (the
guarantee holds; the run is not reproducible bit for bit). What is not covered is listed in
`NOT_COVERED` and written to `model.json`. Opacus is imported only here, only in DP mode.
"""

from __future__ import annotations

import contextlib
import functools
import math
import secrets
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.cohort import Cohort
from ...training.loop import fingerprint
from ...training.seeding import derive_seed
from .config import DP_SETTINGS, HealthGymConfig
from .network import sequence_nll
from .tokenizer import GRID, LENGTH, TokenColumn, Tokenizer
from .trainer import HealthGymTrainer

#: Defaults of the DP settings left None (see `HealthGymConfig`).
DEFAULTS = {"dp_max_grad_norm": 1.0, "dp_epochs": 8, "dp_tokenizer_share": 0.3}
#: delta = DELTA_FACTOR / N by default (below 1/N, the usual ceiling).
DELTA_FACTOR = 0.1
#: A noise multiplier above this means the budget is too small to train: refused.
MAX_NOISE = 20.0
#: Renyi orders the accountant tries: a coarse grid (within 1% of Opacus' 151 orders, 4x
#: faster) for subsampled steps, and larger ones for the tokenizer's unsampled Gaussian.
ALPHAS = [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16,
          18, 20, 24, 28, 32, 40, 48, 56, 64, 96, 128, 256, 512, 1024, 4096]  # fmt: skip
SUBSAMPLED_MAX_ALPHA = 64  #: beyond it a subsampled step's RDP is taken as inf (a bound)
ACCOUNTANT = "RDP (Opacus' RDP analysis: Poisson-subsampled Gaussian, add/remove one patient)"
#: How the tokenizer's privacy share is split between its histograms (renormalised over
#: the groups a cohort needs).
SHARES = {"quantiles": 0.45, "marginals": 0.25, "ranges": 0.2, "decimals": 0.03, "lengths": 0.07}
PER_DECADE = 1  #: range buckets per decade of magnitude
FALSE_KEEP = 1e-3  #: chance that noise alone keeps an empty bucket of a histogram
DECADES = (-3, 9)  #: magnitudes 1e-3 .. 1e9 have their own buckets; beyond: one each
QUANTILE_BINS = 32  #: histogram bins between a real variable's bounds
MAX_START = 1023  #: first steps are counted in 0..MAX_START (clipped)
MAX_STAY = 2**20  #: stays are counted up to this many steps (clipped)
CHUNK = 32  #: patients per vmap call (bounds the memory of per-patient gradients)
_STATICS_MASK = 11  #: seeds the known/unknown masks of the static model's loss

COVERED = [
    "every patient's steps, missingness and stay length, and its statics: DP-SGD on the "
    "sequence and static models (per-patient clipping, Gaussian noise, Poisson sampling)",
    "the tokenizer: real variables' quantile bins and decoding grid, their ranges where the "
    "schema declares no min/max (values outside are clipped), their decimals, the longest "
    "stay (longer stays are cut) and the time origin: Gaussian histograms",
    "no validation split or early stopping on real patients, no heads started at the real "
    "marginals: removed in DP mode",
]
NOT_COVERED = [
    "the schema (variables, kinds, levels, missing flags, declared min/max and constraints) "
    "is public input: a schema inferred from this data reveals its levels and ranges; write "
    "it without the data, or review it",
    "the number of training patients N is public (it sets the sampling rate and the default delta)",
    "metrics.jsonl and learning_dynamics.png (training losses of real patients per batch) and "
    "checkpoints/ (a hash of the training data): keep them private; release the synthetic "
    "data, or weights.pt with model.json, tokenizer.json and schema.yaml",
    "Gaussian noise is drawn in floating point by torch's generator (not a secure RNG; "
    "attacks on floating-point noise are not mitigated)",
    "settings chosen by looking at results on this data spend privacy that is not counted",
]


# ---- settings and budget ---------------------------------------------------------------------
def check_settings(cfg: HealthGymConfig) -> None:
    """ValueErrors for DP settings out of range (called by `HealthGymConfig`)."""
    eps, delta = cfg.dp_epsilon, cfg.dp_delta
    if eps is None:
        given = [k for k in DP_SETTINGS if getattr(cfg, k) is not None]
        raise ValueError(f"{', '.join(given)} needs dp_epsilon (the privacy budget)")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"dp_epsilon must be a number > 0, got {eps}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"dp_delta must be in (0, 1), got {delta}")
    norm = cfg.dp_max_grad_norm
    if norm is not None and not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"dp_max_grad_norm must be > 0, got {norm}")
    if cfg.dp_epochs is not None and cfg.dp_epochs < 1:
        raise ValueError(f"dp_epochs must be >= 1, got {cfg.dp_epochs}")
    share = cfg.dp_tokenizer_share
    if share is not None and not 0 < share < 1:
        raise ValueError(f"dp_tokenizer_share must be in (0, 1), got {share}")


def setting(cfg: HealthGymConfig, name: str) -> Any:
    """A DP setting, its default where None."""
    value = getattr(cfg, name)
    return DEFAULTS[name] if value is None else value


def epsilon_of(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of a history of (noise multiplier, sample rate, steps): the
    Renyi-DP of each Gaussian (Poisson-subsampled where the rate is below 1), summed, then
    converted (Opacus' `compute_rdp` and `get_privacy_spent`, as its RDPAccountant does)."""
    from opacus.accountants.analysis.rdp import get_privacy_spent

    if not history:
        return 0.0
    orders = np.asarray(ALPHAS, dtype=float)
    total = np.zeros(len(orders))
    for sigma, q, steps in history:
        total += int(steps) * _step_rdp(float(sigma), float(q))
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound
        warnings.simplefilter("ignore")
        eps, _ = get_privacy_spent(orders=orders, rdp=total, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=256)
def _step_rdp(sigma: float, q: float) -> np.ndarray:
    """Renyi-DP of one step at each order of ALPHAS."""
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = np.asarray(ALPHAS, dtype=float)
    if q >= 1:  # the Gaussian mechanism: alpha / (2 sigma^2)
        return orders / (2 * sigma**2)
    out = np.full(len(orders), np.inf)
    small = orders <= SUBSAMPLED_MAX_ALPHA
    out[small] = compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders[small].tolist())
    return out


def smallest_noise(
    cost: Callable[[float], float], target: float, low: float = 0.3, high: float = 4 * MAX_NOISE
) -> float:
    """The smallest noise multiplier sigma in [low, high] (to 0.5%) with cost(sigma) <=
    target; inf if even ``high`` costs more. ``cost`` decreases with sigma."""
    if cost(high) > target:
        return math.inf
    if cost(low) <= target:
        return low
    lo, hi = low, high
    while hi / lo > 1.005:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if cost(mid) <= target else (mid, hi)
    return hi


@dataclass(frozen=True)
class Plan:
    """The budget of a DP run, fixed before it touches the data (N is public)."""

    epsilon: float
    delta: float
    delta_default: bool  #: delta was the default DELTA_FACTOR / N
    max_grad_norm: float
    patients: int
    sample_rate: float
    steps_per_epoch: int
    epochs: int
    steps: int  #: DP-SGD steps the noise is calibrated for
    noise_multiplier: float  #: of DP-SGD (noise SD / sensitivity)
    tokenizer_share: float
    tokenizer_noise: float  #: the tokenizer's histograms as one Gaussian

    @classmethod
    def make(cls, cfg: HealthGymConfig, n: int) -> Plan:
        """The plan for N patients; a ValueError when the budget is too small to train."""
        eps = float(cfg.dp_epsilon)
        delta = cfg.dp_delta if cfg.dp_delta is not None else DELTA_FACTOR / n
        share = setting(cfg, "dp_tokenizer_share")
        q = min(1.0, cfg.batch_size / n)
        per_epoch = max(1, round(1 / q))
        epochs = min(cfg.epochs, setting(cfg, "dp_epochs"))
        steps = epochs * per_epoch
        too_small = f"dp_epsilon={eps:g} (delta {delta:.3g}) is too small to train {n} patients: "
        tok = smallest_noise(lambda s: epsilon_of([(s, 1.0, 1)], delta), share * eps, 0.1, 1e5)
        if not math.isfinite(tok):
            raise ValueError(
                too_small + f"the tokenizer's share of it ({share * eps:.2g}) is below what the "
                "accountant can certify; raise dp_epsilon"
            )

        def cost(s: float, k: int = steps) -> float:
            return epsilon_of([(tok, 1.0, 1), (s, q, k)], delta)

        sigma = smallest_noise(cost, eps)
        if not sigma <= MAX_NOISE:
            one = smallest_noise(lambda s: cost(s, 1), eps)
            need = "more than 80" if not math.isfinite(one) else f"{one:.3g}"
            raise ValueError(
                too_small + f"{steps} DP-SGD steps ({epochs} epochs) need a noise multiplier above "
                f"{MAX_NOISE:g} (one step alone: {need}); raise dp_epsilon, lower dp_epochs, "
                "or train on more patients"
            )
        return cls(
            eps, float(delta), cfg.dp_delta is None, float(setting(cfg, "dp_max_grad_norm")),
            n, q, per_epoch, epochs, steps, sigma, float(share), tok,
        )  # fmt: skip

    @property
    def start(self) -> list[tuple[float, float, int]]:
        """The accountant's history before the first DP-SGD step: the tokenizer."""
        return [(self.tokenizer_noise, 1.0, 1)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the tokenizer ---------------------------------------------------------------------------
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


# ---- DP-SGD ----------------------------------------------------------------------------------
class LoopGRU(nn.Module):
    """nn.GRU (one layer, batch first) written out step by step, with nn.GRU's parameter
    names and values, so torch.func can take per-patient gradients through it."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
            raise ValueError("LoopGRU copies a one-layer, batch-first GRU with biases")
        self.input_size, self.hidden_size = gru.input_size, gru.hidden_size
        for name, p in gru.named_parameters():
            self.register_parameter(name, nn.Parameter(p.detach().clone()))

    def forward(
        self, x: torch.Tensor, h: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = x.new_zeros(x.shape[0], self.hidden_size) if h is None else h[0]
        gates_in = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # (B, T, 3H)
        out = []
        for t in range(x.shape[1]):
            r_i, z_i, n_i = gates_in[:, t].chunk(3, dim=-1)
            r_h, z_h, n_h = F.linear(state, self.weight_hh_l0, self.bias_hh_l0).chunk(3, dim=-1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            state = (1 - z) * torch.tanh(n_i + r * n_h) + z * state
            out.append(state)
        return torch.stack(out, dim=1), state[None]

    def to_gru(self) -> nn.GRU:
        gru = nn.GRU(self.input_size, self.hidden_size, batch_first=True)
        gru.load_state_dict(self.state_dict())
        return gru.to(self.weight_ih_l0.device)


class _SequenceLoss(nn.Module):
    def __init__(self, sequence: nn.Module) -> None:
        super().__init__()
        self.sequence = sequence

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> Any:
        return sequence_nll(self.sequence, static, dynamic, lengths)


class _StaticLoss(nn.Module):
    """`network.static_nll` with the known columns given (drawn outside vmap)."""

    def __init__(self, statics: nn.Module) -> None:
        super().__init__()
        self.statics = statics

    def forward(self, static: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        model, n = self.statics, static.shape[1]
        inputs = torch.where(known, static, model.unknown(static.shape[0], static.device))
        ce = torch.stack(
            [
                F.cross_entropy(lg, static[:, j], reduction="none")
                for j, lg in enumerate(model(inputs))
            ],
            1,
        )
        return (ce * ~known).sum(1) * n / (n - known.sum(1))


def static_masks(b: int, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B, S) known columns, drawn as `network.static_nll` draws them."""
    known_count = torch.randint(0, n, (b, 1), generator=rng, device=device)
    rank = torch.rand(b, n, generator=rng, device=device).argsort(1).argsort(1)
    in_order = torch.rand(b, 1, generator=rng, device=device) < 0.5
    rank = torch.where(in_order, torch.arange(n, device=device), rank)
    return rank < known_count


def per_patient_gradients(
    module: nn.Module, *inputs: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({parameter: (B, *shape) gradient of each patient's loss}, (B,) losses) of a module
    whose forward maps a batch of inputs to per-patient losses."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def loss(p: dict[str, torch.Tensor], *one: torch.Tensor) -> tuple[torch.Tensor, Any]:
        value = functional_call(module, (p, buffers), tuple(t[None] for t in one)).sum()
        return value, value.detach()

    per = vmap(grad(loss, has_aux=True), in_dims=(None, *[0] * len(inputs)), randomness="different")
    return per(params, *inputs)


class PrivateTrainer(HealthGymTrainer):
    """DP-SGD on the whole `PatientModel`; see the module docstring. Keeps `HealthGymTrainer`'s
    network, dropout streams and run-folder format; replaces its schedule."""

    distributable = False
    #: seeds the noise and the Poisson batches instead of the system's entropy: tests only
    #: (a run whose noise seed is known has no guarantee)
    secret_seed: ClassVar[int | None] = None

    def __init__(
        self,
        tokens: Tokenizer,
        config: HealthGymConfig,
        plan: Plan,
        marginals: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__(tokens, config)
        self.plan, self.tokens, self.marginals = plan, tokens, marginals
        self.model.sequence.gru = LoopGRU(self.model.sequence.gru)

    def prepare(self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> str:
        if len(lengths) != self.plan.patients:
            raise ValueError(f"the plan is for {self.plan.patients} patients, got {len(lengths)}")
        cfg = self.config
        self.model.to(self.device)
        self.train_idx, self.val_idx = np.arange(len(lengths)), np.arange(0)
        self.data = [t.to(self.device) for t in (static, dynamic, lengths)]
        self.parts = {"statics": self.model.statics, "sequence": self.model.sequence}
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.counters: dict[str, Any] = {"steps": 0, "loss_sum": 0.0, "patients": 0, "lr": cfg.lr}
        self.history = list(self.plan.start)
        seed = self.secret_seed if self.secret_seed is not None else secrets.randbits(63)
        self.secret = torch.Generator().manual_seed(seed)
        self.dropout_rng = None
        self.validated = True
        return fingerprint(static, dynamic, lengths)

    # ---- the loop's hooks --------------------------------------------------------------------
    def start(self) -> None:
        """The heads start at the tokenizer's noisy token counts (not the data's); the
        statics are trained with the steps, not first on their own."""
        if self.marginals:
            start_heads(self.model, self.tokens, self.marginals)

    def epoch_batches(self, epoch: int) -> list[tuple[int, int]]:
        """(epoch, index) per step; each step draws its Poisson batch when it runs."""
        return [(epoch, b) for b in range(self.plan.steps_per_epoch)]

    def step(self, batch: tuple[int, int]) -> dict[str, float]:
        epoch, index = batch
        plan, c = self.plan, self.counters
        if c["steps"] >= plan.steps:  # never reached: stop_reason ends the run first
            raise RuntimeError("the privacy budget is spent: no further step is taken")
        n = plan.patients
        chosen = torch.rand(n, generator=self.secret) < plan.sample_rate
        ids = torch.from_numpy(np.flatnonzero(chosen.numpy())).to(self.device)
        self.model.train()
        with self._dropout_stream(epoch, fresh=index == 0):
            sums, losses = self._clipped_sums(
                ids, derive_seed(self.config.seed, _STATICS_MASK, c["steps"])
            )
        value = float(losses.mean()) if len(ids) else 0.0
        if not math.isfinite(value):  # the loop's guard stops the run; nothing released
            return {"nll": value}
        sd = plan.noise_multiplier * plan.max_grad_norm * math.sqrt(len(self.parts))
        for name, p in self.model.named_parameters():
            noise = torch.normal(0.0, sd, p.shape, generator=self.secret).to(self.device)
            p.grad = (sums[name] + noise) / (plan.sample_rate * n)
        lr = self.config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * c["steps"] / plan.steps)))
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._account(plan.noise_multiplier, plan.sample_rate)
        c["steps"] += 1
        c["lr"] = lr
        c["loss_sum"] += float(losses.sum())
        c["patients"] += len(ids)
        self.validated = False
        return {"nll": value, "patients": float(len(ids))}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        c = self.counters
        train = c["loss_sum"] / max(c["patients"], 1)
        c["loss_sum"], c["patients"] = 0.0, 0
        return {"train_nll": train, "lr": c["lr"], "epsilon": self.epsilon_spent()}

    def stop_reason(self) -> str | None:
        return "privacy_budget" if self.counters["steps"] >= self.plan.steps else None

    def finish(self, run_dir: Path) -> bool:
        """The last weights are the model's (no validation picks others); the GRU becomes
        nn.GRU again for sampling."""
        if isinstance(self.model.sequence.gru, LoopGRU):
            self.model.sequence.gru = self.model.sequence.gru.to_gru()
        self.model.eval()
        self.best_val = None
        return False

    def planned_steps(self, per_epoch: int) -> int | None:
        return self.plan.steps

    def state_dict(self) -> dict[str, Any]:
        weights = self.model.state_dict()
        return {
            "model": weights,
            "best": weights,  # what `read_weights` samples when weights.pt is missing
            "optimizer": self.opt.state_dict(),
            "counters": dict(self.counters),
            "dropout_rng": self.dropout_rng,
            "privacy": {"plan": self.plan.to_dict(), "history": [list(h) for h in self.history]},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["privacy"]
        if saved["plan"] != self.plan.to_dict():
            raise ValueError("the checkpoint's privacy plan differs from this run's")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.counters = dict(state["counters"])
        self.dropout_rng = state["dropout_rng"]
        self.history = [(float(s), float(q), int(k)) for s, q, k in saved["history"]]
        self.validated = self.counters["patients"] == 0

    # ---- privacy -----------------------------------------------------------------------------
    def _account(self, sigma: float, q: float) -> None:
        """One more step in the accountant's history (runs of equal steps merged)."""
        if self.history and self.history[-1][:2] == (sigma, q) and len(self.history) > 1:
            self.history[-1] = (sigma, q, self.history[-1][2] + 1)
        else:
            self.history.append((sigma, q, 1))

    def epsilon_spent(self) -> float:
        """Epsilon of what this run has released so far (the tokenizer and its steps)."""
        return epsilon_of(self.history, self.plan.delta)

    def _clipped_sums(
        self, ids: torch.Tensor, mask_seed: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Sum over the patients of each part's gradient clipped to the norm; their losses."""
        sums = {k: torch.zeros_like(p) for k, p in self.model.named_parameters()}
        losses = []
        static, dynamic, lengths = self.data
        rng = torch.Generator(self.device).manual_seed(mask_seed)
        for chunk in ids.split(CHUNK) if len(ids) else ():  # an empty Poisson batch: no sum
            s, d, n = static[chunk], dynamic[chunk], lengths[chunk]
            d = d[:, : int(n.max())]
            known = static_masks(len(chunk), s.shape[1], rng, self.device)
            total = torch.zeros(len(chunk), device=self.device)
            for module, inputs in (
                (_StaticLoss(self.model.statics), (s, known)),
                (_SequenceLoss(self.model.sequence), (s, d, n)),
            ):
                grads, loss = per_patient_gradients(module, *inputs)
                total += loss
                norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
                factor = (self.plan.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
                for name, g in grads.items():  # the wrappers name parameters as the model does
                    sums[name] += torch.tensordot(factor, g, dims=1)
            losses.append(total)
        return sums, torch.cat(losses) if losses else torch.zeros(0)


# ---- the run ---------------------------------------------------------------------------------
class PrivateRun:
    """What `HealthGym.fit` does differently in DP mode (`model.py` calls these hooks)."""

    def __init__(self, config: HealthGymConfig, run_dir: Path, resume: bool) -> None:
        self.config, self.run_dir, self.resume = config, run_dir, resume
        self.plan: Plan | None = None
        self.tokenizer_info: dict[str, Any] = {}
        self.trainer: PrivateTrainer | None = None

    def fit_tokenizer(self, cohort: Cohort) -> Tokenizer:
        """A resumed run's own tokenizer (released once), else a new DP fit."""
        cfg = self.config
        self.plan = Plan.make(cfg, len(cohort.ids))
        saved = self._saved_block()
        if saved is not None:
            self.tokenizer_info = saved.get("tokenizer", {})
            return Tokenizer.load(self.run_dir / "tokenizer.json")
        rng = np.random.default_rng(
            self._secret_seed()
            if PrivateTrainer.secret_seed is None
            else PrivateTrainer.secret_seed
        )
        tok, self.tokenizer_info = fit_tokenizer(cohort, cfg.bins, cfg.fine, self.plan, rng)
        return tok

    def trainer_and_data(self, cohort: Cohort, tokenizer: Tokenizer) -> Any:
        stays = cut_stays(cohort, tokenizer.max_length)
        tokens = tokenizer.transform(stays, seed=self.config.seed, hold=self.config.last_value)
        data = (tokens.static, tokens.dynamic, tokens.lengths)
        marginals = self.tokenizer_info.get("marginals")
        self.trainer = PrivateTrainer(tokenizer, self.config, self.plan, marginals)
        return self.trainer, tuple(torch.from_numpy(a) for a in data), {}

    def block(self, stopped: str | None = None, finished: bool = False) -> dict[str, Any]:
        """model.json's "privacy": what the guarantee is and what it covers. Before training
        ends (``finished`` False) epsilon_spent and steps are unknown (at most the budget)."""
        import opacus

        plan = self.plan
        trainer = self.trainer if finished else None
        steps = None if trainer is None else trainer.counters["steps"]
        spent = None if trainer is None else trainer.epsilon_spent()
        if not finished:
            status = "training: epsilon_spent is at most epsilon until the run ends"
        elif stopped == "privacy_budget":
            status = "finished: the planned steps are taken"
        else:
            status = f"stopped ({stopped or 'epochs'}); a resumed run stays within epsilon"
        return {
            "mechanism": "DP-SGD (Poisson sampling, per-patient clipping, Gaussian noise) and "
            "Gaussian histograms (tokenizer)",
            "unit": "patient (all of a patient's rows); neighbouring cohorts add or remove one",
            "status": status,
            "epsilon": plan.epsilon,
            "epsilon_spent": spent,
            "delta": plan.delta,
            "delta_rule": f"{DELTA_FACTOR:g} / N (default)" if plan.delta_default else "given",
            "accountant": ACCOUNTANT,
            "opacus": opacus.__version__,
            "max_grad_norm": plan.max_grad_norm,
            "clipping": "per part (static model, sequence model), each to max_grad_norm; noise "
            "SD noise_multiplier * max_grad_norm * sqrt(2) on each",
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "expected_batch_size": plan.sample_rate * plan.patients,
            "patients": plan.patients,
            "steps": steps,
            "planned_steps": plan.steps,
            "epochs": plan.epochs,
            "tokenizer": {
                "epsilon_share": plan.tokenizer_share,
                "epsilon_alone": epsilon_of(plan.start, plan.delta),
                **self.tokenizer_info,
            },
            "covered": COVERED,
            "not_covered": NOT_COVERED,
        }

    def _saved_block(self) -> dict[str, Any] | None:
        """The privacy block of the run being resumed (its tokenizer was released already)."""
        import json

        meta = self.run_dir / "model.json"
        if not self.resume or not meta.is_file() or not (self.run_dir / "tokenizer.json").is_file():
            return None
        with contextlib.suppress(ValueError, OSError):
            block = json.loads(meta.read_text()).get("privacy")
            return block if isinstance(block, dict) else None
        return None

    @staticmethod
    def _secret_seed() -> int:
        return secrets.randbits(63)


def fit_private(
    model: Any, fit: Callable[..., Any], cohort: Cohort, run_dir: Path, resume: bool, *args: Any
) -> Any:
    """`HealthGym._fit` in DP mode: ``fit`` (the shared one) with this module's tokenizer and
    trainer, then model.json's privacy block rewritten with what the run spent."""
    from ...training import distributed

    if distributed.env_world_size() > 1:  # one process: one noise stream, one accountant
        raise ValueError("differentially private training runs in one process, not torchrun")
    run = PrivateRun(model.config, Path(run_dir), resume)
    model._private = run
    try:
        fit(cohort, run_dir, resume, *args)
    finally:
        model._private = None
    model.privacy = run.block(model.result.stopped_early, finished=True)
    model._write_metadata(Path(run_dir))
    return model


def summary_line(block: dict[str, Any]) -> str:
    """One line stating the guarantee of a run's privacy block."""
    spent = block.get("epsilon_spent")
    eps = f"{spent:.3g}" if isinstance(spent, int | float) else f"<= {block.get('epsilon')}"
    return (
        f"({eps}, {block.get('delta', float('nan')):.3g})-differentially private per patient "
        f"({block.get('accountant', '?').split(' ')[0]} accountant; noise multiplier "
        f"{block.get('noise_multiplier', float('nan')):.3g}, clipping norm "
        f"{block.get('max_grad_norm')}, {block.get('steps')} steps at sample rate "
        f"{block.get('sample_rate', float('nan')):.3g})"
    )
