"""A Parquet long table read patient shard by patient shard, for cohorts too big to hold whole.

``HealthGymV1().fit(ParquetShards("big.parquet", schema), run_dir)`` trains on it: the encoder
is fitted one variable at a time (`ParquetShards.fit_encoder`, equal to ``Encoder.fit`` on
the whole cohort), then each process of a torchrun job reads only the row groups holding its
own contiguous range of patients (`healthgym.training.distributed.shard_range`) and encodes
them chunk by chunk (`ParquetShards.design`), so no process ever holds the whole table, its
pandas form or a float64 copy of the design tensor. The trainer then runs with
``sharded=True``.

The file must hold the rows of each patient together and in step order (as ``Cohort``
requires); every chunk is validated as a ``Cohort`` before it is encoded.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..models.encoding import Encoder, fit_columns
from ..training.distributed import shard_range
from .cohort import Cohort, as_levels
from .schema import Schema

#: Patients encoded at once: bounds the pandas and float64 temporaries of a chunk.
CHUNK_PATIENTS = 4096


class ParquetShards:
    """A long table in a Parquet file, or a folder of them read in name order (one row per
    patient per step), and the schema it obeys.

    Opening it reads only the id column, one row group at a time, to find where each patient
    starts; ``len`` is the number of patients, ``lengths`` their steps.
    """

    def __init__(
        self, path: str | Path, schema: Schema | str | Path, *, chunk_patients: int = CHUNK_PATIENTS
    ) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"{self.path}: file not found")
        self.schema = schema if isinstance(schema, Schema) else Schema.from_yaml(schema)
        if chunk_patients < 1:
            raise ValueError(f"chunk_patients must be >= 1, got {chunk_patients}")
        self.chunk_patients = chunk_patients
        # A folder is its *.parquet files in name order (the part files `healthgym sample
        # -o OUT/` writes), read as one table.
        files = sorted(self.path.glob("*.parquet")) if self.path.is_dir() else [self.path]
        if not files:
            raise ValueError(f"{self.path}: a folder without .parquet files")
        self._files = []
        s = self.schema
        wanted = [s.id, s.time, *s.names]
        for f in files:
            try:
                self._files.append(pq.ParquetFile(f))
            except Exception as e:  # pyarrow raises several types for unreadable files
                raise ValueError(f"{f}: cannot read as Parquet ({e})") from None
            names = self._files[-1].schema_arrow.names
            missing = [c for c in wanted if c not in names]
            extra = [c for c in names if c not in wanted]
            if missing or extra:
                raise ValueError(f"{f}: columns missing {missing}, not in the schema {extra}")
        #: every row group of every file, in order: (file index, row group in that file)
        self._groups = [
            (k, g) for k, f in enumerate(self._files) for g in range(f.metadata.num_row_groups)
        ]
        sizes = [self._files[k].metadata.row_group(g).num_rows for k, g in self._groups]
        self._group_start = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        self._cached: tuple[int, tuple[str, ...] | None, Any] | None = None
        starts, run_ids, prev = [], [], None
        for g in range(len(self._groups)):
            ids = self._group(g, (s.id,)).column(0).to_numpy(zero_copy_only=False)
            if len(ids) == 0:
                continue
            new = np.r_[prev is None or ids[0] != prev, ids[1:] != ids[:-1]]
            starts.append(np.flatnonzero(new) + self._group_start[g])
            run_ids.append(ids[new])
            prev = ids[-1]
        if not starts:
            raise ValueError(f"{self.path}: the table is empty (no rows)")
        #: first row of each patient, then the number of rows: patient i is rows [r[i], r[i+1])
        self.patient_rows = np.r_[np.concatenate(starts), self._group_start[-1]]
        self.ids = np.concatenate(run_ids)
        if len(pd.unique(self.ids)) != len(self.ids):
            dup = pd.Series(self.ids)[pd.Series(self.ids).duplicated()].iloc[0]
            raise ValueError(
                f"{self.path}: the rows of patient {dup!r} are not together "
                f"(sort the table by {s.id}, then {s.time})"
            )

    def __len__(self) -> int:
        return len(self.patient_rows) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Rows (steps) per patient, in file order."""
        return np.diff(self.patient_rows)

    def __repr__(self) -> str:
        return (
            f"ParquetShards({self.path.name}: {len(self)} patients, {self.patient_rows[-1]} rows)"
        )

    # ---- reading -------------------------------------------------------------------------
    def _group(self, g: int, columns: tuple[str, ...] | None) -> Any:
        """Row group g (a pyarrow Table), the last one read kept for the next call."""
        if self._cached is None or self._cached[:2] != (g, columns):
            cols = None if columns is None else list(columns)
            k, group = self._groups[g]
            self._cached = (g, columns, self._files[k].read_row_group(group, columns=cols))
        return self._cached[2]

    def read(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """The raw rows of patients [start, stop) (file order), from the row groups holding them."""
        import pyarrow as pa

        stop = len(self) if stop is None else stop
        r0, r1 = int(self.patient_rows[start]), int(self.patient_rows[stop])
        first = int(np.searchsorted(self._group_start, r0, side="right")) - 1
        pieces = []
        for g in range(first, len(self._group_start) - 1):
            g0, g1 = self._group_start[g], self._group_start[g + 1]
            if g0 >= r1:
                break
            lo, hi = max(r0, g0) - g0, min(r1, g1) - g0
            pieces.append(self._group(g, None).slice(lo, hi - lo))
        return pa.concat_tables(pieces, promote_options="permissive").to_pandas()

    def cohorts(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Cohort]]:
        """(first patient, validated Cohort) for chunks of ``chunk_patients`` in [start, stop)."""
        stop = len(self) if stop is None else stop
        for q in range(start, stop, self.chunk_patients):
            table = self.read(q, min(q + self.chunk_patients, stop))
            yield q, Cohort(table, self.schema, part=True)

    def _read_column(self, name: str) -> pd.Series:
        """One column of every row, file after file, as read (no normalisation)."""
        parts = [f.read(columns=[name]).column(0).to_pandas() for f in self._files]
        return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]

    def _column(self, name: str, rows: np.ndarray | None = None) -> pd.Series:
        """One variable for every row (or the given rows), as ``Cohort`` normalises it."""
        col = self._read_column(name)
        if rows is not None:
            col = col.iloc[rows].reset_index(drop=True)
        v = self.schema[name]
        col = self.schema.apply_bins(pd.DataFrame({name: col}))[name]
        if v.kind == "real":
            return pd.Series(col.to_numpy(dtype=float))
        return pd.Series(as_levels(col, v.levels))

    # ---- encoding ------------------------------------------------------------------------
    def fit_encoder(self) -> Encoder:
        """``Encoder(schema).fit(cohort)`` for the whole file, one column in memory at a time.

        The chunks are validated later, when `design` encodes them.
        """
        enc = Encoder(self.schema)
        first = self.patient_rows[:-1]
        for block, variables in (("static", self.schema.static), ("dynamic", self.schema.dynamic)):
            rows = first if block == "static" else None
            columns = fit_columns(variables, partial(self._column, rows=rows))
            setattr(enc, f"{block}_columns", columns)
        enc.max_length = int(self.lengths.max())
        times = self._read_column(self.schema.time).to_numpy()[first]
        enc.time_origin = int(pd.Series(times.astype(np.int64)).mode().iloc[0])
        return enc

    def design(
        self, encoder: Encoder, rank: int = 0, world: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Design tensor x (n, T, S + D) float32 and lengths (n,) of process ``rank``'s patients.

        The same rows as v1's ``design_matrix`` of the whole cohort, cast to float32, for the
        patients ``shard_range(len(self), rank, world)``; built chunk by chunk into one array.
        """
        start, stop = shard_range(len(self), rank, world)
        s, d, t = encoder.n_static, encoder.n_dynamic, encoder.max_length
        x = np.zeros((stop - start, t, s + d), dtype=np.float32)
        for q, cohort in self.cohorts(start, stop):
            encoded = encoder.transform(cohort)
            if encoded.dynamic.shape[1] > t:
                raise ValueError(f"{self.path}: patients longer than the encoder's {t} steps")
            i, m = q - start, len(encoded.static)
            x[i : i + m, :, :s] = encoded.static[:, None, :]
            x[i : i + m, :, s:] = encoded.dynamic
        lengths = torch.from_numpy(self.lengths[start:stop].astype(np.int64))
        return torch.from_numpy(x), lengths
