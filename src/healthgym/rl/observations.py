"""How a patient's state becomes an RL observation vector; one layout for the offline-RL
export (`healthgym.rl.offline`) and the simulator (`healthgym.rl.env`), so that a policy trained on
one runs on the other.

Every non-action variable, statics first, in schema order: a real as its value (carried
forward within the stay, the median where never measured) and, when its schema allows
missing values, a 0/1 "measured" column after it; a binary or categorical variable one-hot
over its levels (all zeros when missing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import level_codes
from ..data.schema import Schema, Variable


@dataclass(frozen=True)
class ObservationLayout:
    """The observed variables, the reals' fill values and the vector's column names."""

    variables: tuple[Variable, ...]
    medians: dict[str, float]
    names: tuple[str, ...]
    previous: tuple[int, ...] = ()  # levels of each treatment observed one step back

    @classmethod
    def of(
        cls,
        schema: Schema,
        left_out: Sequence[str],
        medians: dict[str, float],
        previous: dict[str, list[Any]] | None = None,
    ) -> ObservationLayout:
        """The layout of `schema` without `left_out` (the actions: the policy's choice; and
        any variable not to be observed); `previous` (treatment -> its levels) adds the
        treatments of the step before, one-hot (`NAME__previous=LEVEL`, all zeros at a
        stay's first step), after the rest."""
        observed = [v for v in [*schema.static, *schema.dynamic] if v.name not in left_out]
        names: list[str] = []
        for v in observed:
            if v.kind == "real":
                names += [v.name] + ([f"{v.name}__measured"] if v.missing == "flag" else [])
            else:
                names += [f"{v.name}={level}" for level in v.levels]
        for name, levels in (previous or {}).items():
            names += [f"{name}__previous={level}" for level in levels]
        sizes = tuple(len(levels) for levels in (previous or {}).values())
        return cls(tuple(observed), dict(medians), tuple(names), sizes)

    def encode(
        self,
        filled: Mapping[str, Any],
        measured: Mapping[str, Any],
        previous: np.ndarray | None = None,
    ) -> np.ndarray:
        """(rows, d) float32 from carried-forward values and where values were measured
        (tables, or arrays by variable); with `previous` treatments in the layout, their
        level indices at the step before (rows, A), -1 where there is none."""
        columns = []
        for v in self.variables:
            if v.kind == "real":
                x = np.asarray(pd.to_numeric(filled[v.name], errors="coerce"), dtype=np.float64)
                columns.append(np.where(np.isnan(x), self.medians.get(v.name, 0.0), x))
                if v.missing == "flag":
                    columns.append(np.asarray(measured[v.name], dtype=np.float64))
            else:
                code = _codes(filled[v.name], v.levels)  # -1 where missing
                columns += [(code == j).astype(np.float64) for j in range(len(v.levels))]
        for k, size in enumerate(self.previous):
            assert previous is not None, "the layout observes the previous treatments"
            columns += [(previous[:, k] == j).astype(np.float64) for j in range(size)]
        return np.stack(columns, axis=1).astype(np.float32)


def _codes(x: Any, levels: list[Any]) -> np.ndarray:
    """`level_codes`, by a dictionary for the simulator's arrays (one step of every patient:
    a pandas index per column and step cost more than the step's model call at 1 patient)."""
    if not isinstance(x, np.ndarray):
        return level_codes(np.asarray(x), levels)
    index = {level: k for k, level in enumerate(levels)}
    return np.fromiter((index.get(v, -1) for v in x.tolist()), dtype=np.int64, count=len(x))


def scaling(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (standard deviation, at least 1e-6) of each observation column."""
    return observations.mean(0), np.maximum(observations.std(0), 1e-6)
