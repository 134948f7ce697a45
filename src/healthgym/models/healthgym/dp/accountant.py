"""The privacy budget of a DP run: the plan fixed before the data is touched, and its books,
kept by Opacus' `RDPAccountant` (history of (noise multiplier, sample rate, steps), repeated
steps merged, `get_epsilon`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..config import HealthGymConfig

#: Defaults of the DP settings left None (see `HealthGymConfig`).
DEFAULTS = {"dp_max_grad_norm": 1.0, "dp_epochs": 8, "dp_tokenizer_share": 0.3}
#: delta = DELTA_FACTOR / N by default (below 1/N, the usual ceiling).
DELTA_FACTOR = 0.1
#: A noise multiplier above this means the budget is too small to train: refused.
MAX_NOISE = 20.0
#: Renyi orders the accountant tries: a coarse grid up to 64 (the subsampled steps' optimum
#: lies there) and large ones, where the tokenizer's unsampled Gaussian finds its optimum.
ALPHAS = [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16,
          18, 20, 24, 28, 32, 40, 48, 56, 64, 96, 128, 256, 512, 1024, 4096]  # fmt: skip
ACCOUNTANT = "RDP (Opacus' RDP analysis: Poisson-subsampled Gaussian, add/remove one patient)"
#: How the tokenizer's privacy share is split between its histograms (renormalised over
#: the groups a cohort needs).


def setting(cfg: HealthGymConfig, name: str) -> Any:
    """A DP setting, its default where None."""
    value = getattr(cfg, name)
    return DEFAULTS[name] if value is None else value


def accountant(history: list[tuple[float, float, int]] = ()) -> Any:
    """Opacus' RDPAccountant holding ``history`` ((noise multiplier, sample rate, steps))."""
    from opacus.accountants import RDPAccountant

    books = RDPAccountant()
    books.history = [(float(s), float(q), int(k)) for s, q, k in history]
    return books


def epsilon_of(history: list[tuple[float, float, int]], delta: float) -> float:
    """Epsilon at ``delta`` of a history of (noise multiplier, sample rate, steps): Opacus'
    RDP analysis of each Gaussian (Poisson-subsampled where the rate is below 1), summed over
    the history and converted at the best of `ALPHAS`."""
    if not history:
        return 0.0
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound
        warnings.simplefilter("ignore")
        return float(accountant(history).get_epsilon(delta, alphas=ALPHAS))


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
