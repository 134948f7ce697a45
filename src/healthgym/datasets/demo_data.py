"""The bundled demo cohort: PhysioNet 2012 set A, 4,000 stays as 12 steps of 4 hours.

It ships with the package so that examples, tests and benchmarks run without downloading
anything. Regenerate it from the challenge data with

    python -m healthgym.datasets --source /path/to/set-a.csv.gz [--outcomes Outcomes-a.txt]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.atomic import write_atomic
from ..data.cohort import Cohort
from .physionet2012 import physionet2012

DATA = Path(__file__).parent / "data"
TABLE = "physionet2012_demo.parquet"
SCHEMA = "physionet2012_demo.schema.yaml"
HOURS, STEP_HOURS = 48, 4

# Static descriptors and the outcome, then frequently measured vitals, two routine labs, fluid
# balance and ventilation: mixed kinds, at most ~75% missing steps.
VARIABLES = [
    "Age", "Gender", "ICUType", "in_hospital_death",
    "HR", "SysABP", "MAP", "RespRate", "Temp", "GCS", "FiO2", "MechVent", "Glucose",
    "Creatinine", "Urine", "Weight",
]  # fmt: skip


def demo() -> Cohort:
    """The demo cohort (4,000 patients x 12 steps, 16 variables), read from the package."""
    return Cohort.from_parquet(DATA / TABLE, DATA / SCHEMA)


def build_demo(source: str | Path, outcomes: str | Path | None = None) -> Cohort:
    """The demo cohort computed from the challenge files (what the bundled file holds)."""
    return physionet2012(source, outcomes, hours=HOURS, step_hours=STEP_HOURS, variables=VARIABLES)


def write_demo(cohort: Cohort, folder: str | Path = DATA) -> Path:
    """Write the table (float32 reals) and its schema into `folder`, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = write_atomic(
        folder / TABLE,
        lambda tmp: _compact(cohort).to_parquet(tmp, index=False, compression="zstd"),
    )
    cohort.schema.to_yaml(folder / SCHEMA)
    return target


def _compact(cohort: Cohort) -> pd.DataFrame:
    """Float32 reals (7 significant digits, more than any reading has) and Int8 levels."""
    table = cohort.table.copy()
    for v in cohort.schema.variables:
        if v.kind == "real":
            table[v.name] = table[v.name].astype(np.float32)
        elif all(isinstance(level, int) for level in v.levels):
            table[v.name] = pd.array(table[v.name].tolist(), dtype="Int8")
    return table
