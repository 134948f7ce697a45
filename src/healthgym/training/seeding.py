"""Seeds: one rule for every seed a user gives, and seeds derived from a run's seed, so each
random stream of a run is its own and repeatable."""

from __future__ import annotations

import numbers

import numpy as np

#: The largest seed: torch, numpy and the derived streams all take 0 .. 2**63 - 1.
MAX_SEED = 2**63 - 1


def check_seed(seed: object, name: str = "seed") -> None:
    """ValueError naming ``name`` unless ``seed`` is an integer in 0 .. MAX_SEED."""
    ok = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    if not ok or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"{name} must be an integer from 0 to 2**63 - 1, got {seed!r}")


def fresh_seed() -> int:
    """A seed drawn from the OS's entropy (for a sample with no seed given)."""
    return int(np.random.SeedSequence().entropy % (MAX_SEED + 1))


def derive_seed(*keys: int) -> int:
    """A 64-bit seed mixed from non-negative ints, e.g. (seed, tag, epoch, stage)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0])
