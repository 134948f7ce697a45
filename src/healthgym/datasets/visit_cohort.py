"""Development cohorts beyond the demo: a small visit-style cohort and the variable-length demo.

`visits()`: 250 ICU stays of PhysioNet 2012 set A as irregular *lab visits*, the shape of a
clinic cohort (a few hundred patients, 1 to 16 visits at irregular intervals, slow-moving lab
values missing at some visits, a time-like "days since the first visit" that starts at 0 and
never goes back). Set A holds only the first 48 h of each stay, so a day-by-day grid would
give two or three steps per patient; the lab draws themselves are the visits instead:

- the readings of `LABS` (a routine chemistry and blood count) are taken in time order; a
  visit opens with a reading more than `MERGE_MINUTES` (60) after the current visit opened
  and gathers the readings until then (draws of one panel are minutes apart);
- a visit's value of a lab is the mean of its readings in the visit, missing where the lab
  was not drawn (no imputation: the gaps are kept);
- `days`: days from the patient's first visit to this visit (3 decimals), so 0 at the first
  visit of every patient and increasing; declared `monotone: increasing`, `start: 0`,
  `min: 0`, `max: 2` (the 48 hours) in the schema;
- statics: `Age`, `Gender`, `ICUType`, `in_hospital_death`;
- `N_PATIENTS` (250) stays drawn with seed 0 from the stays with at least one visit, the
  first `MAX_VISITS` (16) visits kept. Readings are cleaned as by `physionet2012` (`clean`).

The cohort is bundled (`data/physionet2012_visits.parquet`, about 40 KB, with its schema;
attribution in `data/README.md`) and rebuilt from the challenge files by `build_visits` or
`python -m healthgym.datasets --cohort visits --source set-a.csv.gz`.

`variable_length()`: `VARIABLE_LENGTH_PATIENTS` (400) demo stays drawn with a seed, each cut
after a seeded uniform 1..12 steps (`variable_length.cut_stays`): the cohort of the
"variable-length" peer benchmark (`benchmarks/peers`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.atomic import write_atomic
from ..data.cohort import Cohort
from ..data.schema import Schema, Variable
from .demo_data import DATA, demo
from .physionet2012 import (
    BOXCOX,
    ID,
    OUTCOME,
    VARIABLES,
    _read_outcomes,
    _statics,
    clean,
    read_physionet2012_long,
)
from .variable_length import cut_stays

TABLE = "physionet2012_visits.parquet"
SCHEMA = "physionet2012_visits.schema.yaml"
TIME = "visit"
DAYS = "days"
LABS = ["Creatinine", "BUN", "HCT", "WBC", "Platelets", "Na", "K", "HCO3"]
STATICS = ["Age", "Gender", "ICUType", OUTCOME]
MERGE_MINUTES = 60
MAX_VISITS = 16
N_PATIENTS = 250
HOURS = 48
VARIABLE_LENGTH_PATIENTS = 400


def visits() -> Cohort:
    """The bundled visit-style cohort (250 patients, 1..16 irregular lab visits)."""
    return Cohort.from_parquet(DATA / TABLE, DATA / SCHEMA)


def variable_length(n: int = VARIABLE_LENGTH_PATIENTS, seed: int = 0) -> Cohort:
    """`n` demo stays (a seeded draw), each cut after a seeded uniform 1..12 steps."""
    cohort = demo()
    ids = cohort.ids
    pick = ids[np.sort(np.random.default_rng(seed).permutation(len(ids))[:n])]
    return cut_stays(cohort.subset(pick), seed=seed)


def development() -> dict[str, Cohort]:
    """The development cohorts by name: the demo, its variable-length variant, the visits."""
    return {"demo": demo(), "variable_length": variable_length(), "visits": visits()}


def build_visits(
    source: str | Path,
    outcomes: str | Path | None = None,
    *,
    n: int = N_PATIENTS,
    seed: int = 0,
    merge_minutes: float = MERGE_MINUTES,
    max_visits: int = MAX_VISITS,
) -> Cohort:
    """The visit cohort computed from the challenge files (what the bundled file holds)."""
    raw = clean(read_physionet2012_long(source))
    labs = raw[raw["Parameter"].isin(LABS) & (raw["minutes"] <= HOURS * 60)]
    ids = np.sort(labs[ID].unique())
    if n > len(ids):
        raise ValueError(f"{source}: {len(ids)} stays have lab visits, fewer than n={n}")
    chosen = np.sort(np.random.default_rng(seed).permutation(ids)[:n])
    labs = labs[labs[ID].isin(chosen)].sort_values([ID, "minutes"], kind="stable")
    visit, opened = _visits(labs[ID].to_numpy(), labs["minutes"].to_numpy(), merge_minutes)
    labs = labs.assign(**{TIME: visit, "opened": opened})
    labs = labs[labs[TIME] < max_visits]
    wide = labs.pivot_table(index=[ID, TIME], columns="Parameter", values="Value", aggfunc="mean")
    wide = wide.reindex(columns=LABS)
    first = labs.groupby([ID, TIME])["opened"].first()
    start = first.groupby(level=ID).transform("first")
    wide.insert(0, DAYS, np.round((first - start).to_numpy() / 1440.0, 3))
    table = wide.reset_index().join(_statics(raw), on=ID)
    path = Path(outcomes) if outcomes is not None else Path(source).parent / "Outcomes-a.txt"
    table = table.join(_read_outcomes(path, chosen), on=ID)
    table = table[[ID, TIME, *STATICS, DAYS, *LABS]]
    return Cohort(table, visits_schema(table))


def _visits(ids: np.ndarray, minutes: np.ndarray, merge: float) -> tuple[np.ndarray, np.ndarray]:
    """Per reading (sorted by id, time): its visit number within the patient and the minute
    its visit opened."""
    visit = np.zeros(len(ids), dtype=np.int64)
    opened = np.zeros(len(ids), dtype=float)
    for i in range(len(ids)):
        if i and ids[i] == ids[i - 1] and minutes[i] - opened[i - 1] <= merge:
            visit[i], opened[i] = visit[i - 1], opened[i - 1]
        elif i and ids[i] == ids[i - 1]:
            visit[i], opened[i] = visit[i - 1] + 1, minutes[i]
        else:
            visit[i], opened[i] = 0, minutes[i]
    return visit, opened


def visits_schema(table: pd.DataFrame) -> Schema:
    """Statics as `physionet2012` declares them, `days` with its constraints, labs flagged."""
    variables = [Variable(n, **VARIABLES[n]) for n in STATICS]
    variables.append(Variable(DAYS, "real", monotone="increasing", start=0, min=0, max=HOURS / 24))
    for name in LABS:
        transform = "boxcox" if name in BOXCOX else "minmax"
        missing = "flag" if table[name].isna().any() else "none"
        variables.append(Variable(name, "real", transform=transform, missing=missing))
    return Schema(id=ID, time=TIME, variables=variables)


def write_visits(cohort: Cohort, folder: str | Path = DATA) -> Path:
    """Write the table and its schema into `folder`, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = cohort.table.copy()
    for name in ("Gender", "ICUType"):
        table[name] = table[name].astype(str)
    target = write_atomic(
        folder / TABLE, lambda tmp: table.to_parquet(tmp, index=False, compression="zstd")
    )
    cohort.schema.to_yaml(folder / SCHEMA)
    return target
