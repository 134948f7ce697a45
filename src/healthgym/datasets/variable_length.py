"""A variable-length variant of a cohort, for models and metrics that handle ragged stays.

The bundled demo cohort has 12 steps for every stay; cutting each stay at a random end gives
a reproducible cohort with a spread of lengths to train and evaluate length generation on.
"""

from __future__ import annotations

import numpy as np

from ..data.cohort import Cohort


def cut_stays(cohort: Cohort, seed: int = 0, min_length: int = 1) -> Cohort:
    """Keep the first L steps of each stay, L uniform on min_length..its length (seeded).

    Stays shorter than `min_length` are kept whole. The schema is unchanged, so the result
    trains and evaluates beside the original.
    """
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    table, schema = cohort.table, cohort.schema
    lengths = cohort.lengths.to_numpy()
    rng = np.random.default_rng(seed)
    keep = rng.integers(np.minimum(min_length, lengths), lengths + 1)  # (N,) inclusive
    pid = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(table)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cut = table[pos < keep[pid]].reset_index(drop=True)
    return Cohort(cut, schema, strict=False)
