"""Health Gym's published synthetic datasets as Cohorts, and cohorts back in their layouts.

`art_for_hiv`, `hypotension` and `sepsis` read the published CSV files: codes become labelled
levels, kinds, roles and transforms are set as published (see `healthgym_layouts`, which also
lists the assumptions about layouts that could not be checked against a copy of the file).
`to_published` / `write_published` turn a cohort with those variables (real or synthetic)
back into the same columns, order and codes, so code written for the published files runs on
synthetic ones.

Reading is tolerant where files of the same layout legitimately differ and strict elsewhere:
columns may come in any order, codes may be written as integers or floats (1 or 1.0), rows
are sorted by patient and step, and a leading unnamed row-index column is ignored; a missing
or unexpected column, or a code outside the published set, is a ValueError.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import Cohort, read_table, write_tables
from ..data.schema import Schema
from .healthgym_layouts import (
    ROW_INDEX,
    Layout,
    get_layout,
    published_dataset,
    schema_differences,
)

PANDAS_ROW_INDEX = "Unnamed: 0"  # how pandas names an unnamed leading column


def art_for_hiv(path: str | Path, *, strict: bool = True) -> Cohort:
    """The ART for HIV file (Health Gym v2.0): id `PatientID`, step `Timestep`.

    `strict=False` admits Gender or Ethnic varying within a patient (v1 samples do that).
    """
    return load_published("art-for-hiv", path, strict=strict)


def hypotension(path: str | Path, *, strict: bool = True) -> Cohort:
    """The acute hypotension file (MIMIC-III): id `PatientID`, step `Timepoints` (hours)."""
    return load_published("hypotension", path, strict=strict)


def sepsis(path: str | Path, *, strict: bool = True) -> Cohort:
    """The sepsis file (MIMIC-III): id `PatientID`, step `Timepoints` (4-hour steps)."""
    return load_published("sepsis", path, strict=strict)


def load_published(dataset: str, path: str | Path, *, strict: bool = True) -> Cohort:
    """A published dataset's file as a Cohort (`dataset` is one of `DATASETS`)."""
    layout = get_layout(dataset)
    table = read_table(path)
    if len(table.columns) and table.columns[0] == PANDAS_ROW_INDEX:
        table = table.drop(columns=PANDAS_ROW_INDEX)
    _check_columns(table, layout, path)
    columns = {}
    for c in layout.columns:
        codes = layout.codes.get(c)
        columns[c] = table[c] if codes is None else _decode(table[c], codes, path)
    frame = pd.DataFrame(columns).sort_values(
        [layout.id, layout.time], kind="stable", ignore_index=True
    )
    return Cohort(frame, layout.schema(), strict=strict)


def to_published(cohort: Cohort, dataset: str | None = None) -> pd.DataFrame:
    """`cohort` in the published layout of `dataset` (default: recognised from its variables):
    the published column names, order and codes; ids and steps as in the cohort."""
    dataset = dataset or published_dataset(cohort.schema)
    frames = published_frames([cohort.table], cohort.schema, dataset)
    return pd.concat(list(frames), ignore_index=True)


def write_published(cohort: Cohort, path: str | Path, dataset: str | None = None) -> Path:
    """Write `to_published(cohort, dataset)` as CSV, atomically (temp file, then rename)."""
    dataset = dataset or published_dataset(cohort.schema)
    frames = published_frames([cohort.table], cohort.schema, dataset)
    return write_tables(frames, path, cohort.schema, fmt="csv")[0]


def published_frames(
    tables: Iterable[pd.DataFrame], schema: Schema, dataset: str
) -> Iterator[pd.DataFrame]:
    """Long-table chunks that obey `schema`, converted chunk by chunk to the published layout
    (bounded memory for large samples; a row-index column keeps counting across chunks)."""
    layout = get_layout(dataset)
    diff = schema_differences(schema, layout)
    if diff:
        raise ValueError(
            f"the cohort does not have the {layout.title} variables: {diff[:8]} differ "
            "in name, kind or levels"
        )
    rows = 0
    for table in tables:
        frame = _encode(table, schema, layout)
        if layout.row_index:
            frame.insert(0, ROW_INDEX, np.arange(rows, rows + len(frame)))
        rows += len(frame)
        yield frame


def _check_columns(table: pd.DataFrame, layout: Layout, path: str | Path) -> None:
    found = [str(c) for c in table.columns]
    missing = [c for c in layout.columns if c not in found]
    unexpected = [c for c in found if c not in layout.columns]
    if missing or unexpected:
        raise ValueError(
            f"{path}: not the published {layout.title} layout (missing {missing}, unexpected "
            f"{unexpected}); expected the columns {list(layout.columns)}, found {found}"
        )


def _decode(col: pd.Series, codes: dict[Any, Any], path: str | Path) -> pd.Series:
    """Codes -> levels. Codes match numerically (1, 1.0 and 1.0000001 alike); NaN stays NaN."""
    x = pd.to_numeric(col, errors="coerce")
    text = col[x.isna() & col.notna()]
    if len(text):
        raise ValueError(
            f"{path}: column {col.name!r} holds non-numeric values {pd.unique(text)[:5].tolist()}; "
            f"the published codes are {list(codes)}"
        )
    seen = pd.unique(x.dropna()).astype(float)
    keys = np.asarray(list(codes), dtype=float)
    match = np.isclose(seen[:, None], keys[None, :], rtol=1e-6, atol=1e-9)
    unknown = seen[~match.any(axis=1)]
    if len(unknown):
        raise ValueError(
            f"{path}: column {col.name!r} has codes {np.sort(unknown)[:5].tolist()} "
            f"({len(unknown)} in all) outside the published codes {list(codes)}"
        )
    levels = np.asarray(list(codes.values()), dtype=object)[match.argmax(axis=1)]
    return x.map(dict(zip(seen.tolist(), levels, strict=True)))


def _encode(table: pd.DataFrame, schema: Schema, layout: Layout) -> pd.DataFrame:
    """One long-table chunk (level values) -> the published columns (codes), in order."""
    out = {}
    for c in layout.columns:
        if c == layout.id:
            out[c] = table[schema.id].to_numpy()
        elif c == layout.time:
            out[c] = table[schema.time].to_numpy()
        elif c in layout.codes:
            to_code = {level: code for code, level in layout.codes[c].items()}
            out[c] = table[c].map(to_code).to_numpy()
        else:
            out[c] = table[c].to_numpy(dtype=float)
    return pd.DataFrame(out)
