"""Cells as positions in their variable's levels: the one rule every module that reads
binary and categorical columns shares (re-exported by `data.cohort`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def level_codes(col: pd.Series | np.ndarray, levels: list[Any]) -> np.ndarray:
    """Position of each cell in `levels`; -1 for missing (cells must be known levels)."""
    return pd.Index(levels, dtype=object).get_indexer(pd.Series(col).astype(object))
