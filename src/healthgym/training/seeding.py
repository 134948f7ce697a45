"""Seeds derived from a run's seed, so each random stream of a run is its own and repeatable."""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 64-bit seed mixed from non-negative ints, e.g. (seed, tag, epoch, stage)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0])
