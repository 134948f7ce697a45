"""A cohort: a long patient table (one row per patient per step) and the schema it obeys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import write_atomic
from .inference import infer_schema
from .levels import level_codes
from .schema import Schema, Variable


class Cohort:
    """A validated long table plus its schema.

    Construction checks the table (see `Schema.validate`) and normalises it: columns in
    schema order, integer steps, float reals, categorical cells holding their level values.
    `strict=False` admits generated tables whose statics drift or whose columns came out
    entirely missing; `part=True` some patients of a larger cohort (a chunk of a file), in
    which a column may be entirely missing (see `Schema.validate`).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        schema: Schema | None = None,
        *,
        id: str | None = None,
        time: str | None = None,
        strict: bool = True,
        part: bool = False,
        **infer_options: Any,
    ) -> None:
        if schema is None:
            if id is None or time is None:
                raise ValueError("give a schema, or the id and time column names to infer one")
            schema = infer_schema(table, id, time, **infer_options)
        elif (id is not None and id != schema.id) or (time is not None and time != schema.time):
            raise ValueError(
                f"id/time ({id!r}, {time!r}) disagree with the schema's "
                f"({schema.id!r}, {schema.time!r})"
            )
        table = schema.apply_bins(table)
        schema.validate(table, strict=strict, part=part)
        self.schema = schema
        self.table = _normalise(table, schema)

    # ---- IO --------------------------------------------------------------------------------
    @classmethod
    def from_file(
        cls, path: str | Path, schema: Schema | str | Path | None = None, **kw: Any
    ) -> Cohort:
        """CSV or Parquet by file extension; `schema` is a Schema, a YAML path, or None to
        infer one (then give `id=` and `time=`; other keywords go to the constructor)."""
        return cls(read_table(path), _as_schema(schema), **kw)

    @classmethod
    def from_csv(
        cls, path: str | Path, schema: Schema | str | Path | None = None, **kw: Any
    ) -> Cohort:
        """See `from_file`."""
        return cls(read_table(path, pd.read_csv), _as_schema(schema), **kw)

    @classmethod
    def from_parquet(
        cls, path: str | Path, schema: Schema | str | Path | None = None, **kw: Any
    ) -> Cohort:
        """See `from_file`."""
        return cls(read_table(path, pd.read_parquet), _as_schema(schema), **kw)

    def to_csv(self, path: str | Path) -> Path:
        """Write atomically (temp file, then rename)."""
        return write_tables([self.table], path, self.schema, fmt="csv")[0]

    def to_parquet(self, path: str | Path) -> Path:
        """Write atomically (temp file, then rename)."""
        return write_tables([self.table], path, self.schema, fmt="parquet")[0]

    def to_file(self, path: str | Path) -> Path:
        """CSV or Parquet by file extension."""
        return write_tables([self.table], path, self.schema)[0]

    # ---- views -----------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        return pd.unique(self.table[self.schema.id])

    @property
    def lengths(self) -> pd.Series:
        """Number of steps per patient, indexed by patient id (table order)."""
        return self.table.groupby(self.schema.id, sort=False).size().rename("length")

    @property
    def first_rows(self) -> np.ndarray:
        """True at each patient's first row (a patient's rows are contiguous, in step order)."""
        ids = self.table[self.schema.id].to_numpy()
        return np.r_[True, ids[1:] != ids[:-1]]

    @property
    def common_start(self) -> int:
        """The most common first step of a patient (the smallest of equally common ones)."""
        starts = self.table[self.schema.time].to_numpy()[self.first_rows]
        return int(pd.Series(starts).mode().iloc[0])

    def blocks(self) -> list[tuple[str, list[Variable], pd.DataFrame]]:
        """("static", static variables, each patient's first row), ("dynamic", ..., every row)."""
        table, schema = self.table, self.schema
        return [
            ("static", schema.static, table.loc[self.first_rows]),
            ("dynamic", schema.dynamic, table),
        ]

    def require_schema(self, schema: Schema, user: str) -> None:
        """Raise ValueError unless the cohort's schema is ``schema``, that of ``user``."""
        if self.schema.to_dict() != schema.to_dict():
            raise ValueError(f"the cohort's schema differs from the {user}'s schema")

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        lengths = self.lengths
        lo, hi = int(lengths.min()), int(lengths.max())
        steps = f"{lo}" if lo == hi else f"{lo}..{hi}"
        return (
            f"Cohort({len(lengths)} patients x {steps} steps, "
            f"{len(self.schema.static)} static + {len(self.schema.dynamic)} dynamic variables)"
        )

    def static_table(self) -> pd.DataFrame:
        """One row per patient: id and the static variables (first step's value)."""
        cols = [self.schema.id, *[v.name for v in self.schema.static]]
        return self.table[cols].groupby(self.schema.id, sort=False).first().reset_index()

    def subset(self, ids: Any) -> Cohort:
        """The cohort restricted to these patient ids (schema unchanged)."""
        keep = self.table[self.schema.id].isin(set(ids))
        out = object.__new__(Cohort)
        out.schema, out.table = self.schema, self.table[keep].reset_index(drop=True)
        if len(out.table) == 0:
            raise ValueError("subset selects no patients")
        return out

    def split(self, holdout: float = 0.2, seed: int = 0) -> tuple[Cohort, Cohort]:
        """Split by patient into (train, holdout); `holdout` is a fraction in (0, 1)."""
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
        ids = self.ids
        n_hold = int(round(holdout * len(ids)))
        if n_hold < 1 or n_hold >= len(ids):
            raise ValueError(f"cannot split {len(ids)} patients with holdout={holdout}")
        perm = np.random.default_rng(seed).permutation(len(ids))
        hold = set(ids[perm[:n_hold]].tolist())
        return self.subset([i for i in ids if i not in hold]), self.subset(hold)

    def summary(self) -> pd.DataFrame:
        """Per variable: kind, role, missing rate, and mean/sd or the most common level."""
        rows = []
        for v in self.schema.variables:
            col = self.table[v.name]
            row = {"variable": v.name, "kind": v.kind, "role": v.role, "missing": col.isna().mean()}
            if v.kind == "real":
                row |= {"mean": col.mean(), "sd": col.std(), "min": col.min(), "max": col.max()}
            else:
                freq = col.value_counts(normalize=True)
                row |= {"levels": len(v.levels), "top": freq.index[0], "top_share": freq.iloc[0]}
            rows.append(row)
        return pd.DataFrame(rows).set_index("variable")


def _as_schema(schema: Schema | str | Path | None) -> Schema | None:
    if schema is None or isinstance(schema, Schema):
        return schema
    return Schema.from_yaml(schema)


#: Table files by their name's ending (case-insensitive): CSV, gzipped CSV, Parquet.
TABLE_FORMATS = {".csv": "csv", ".csv.gz": "csv.gz", ".parquet": "parquet", ".pq": "parquet"}
SUPPORTED_TABLES = ".csv, .csv.gz or .parquet"
#: What a file's first bytes say it is, for files named as another format.
_MAGIC = {
    b"PAR1": "a Parquet file (name it .parquet)",
    b"\x1f\x8b": "gzip-compressed (name it .csv.gz)",
    b"PK\x03\x04": "a zip archive, e.g. an Excel workbook (save it as CSV)",
}


def table_format(path: str | Path, *, write: bool = False) -> str:
    """The format of a table file by its name: "csv", "csv.gz" or "parquet" (else a
    ValueError naming the supported ones); ``write``: "csv" or "parquet" only."""
    name = Path(path).name.lower()
    fmt = next((f for ending, f in TABLE_FORMATS.items() if name.endswith(ending)), None)
    if write and fmt not in ("csv", "parquet"):
        raise ValueError(f"{path}: tables are written to .csv or .parquet files")
    if fmt is None:
        raise ValueError(f"{path}: not a table file this reads ({SUPPORTED_TABLES})")
    return fmt


def read_table(path: str | Path, reader: Any = None) -> pd.DataFrame:
    """A raw long table from a .csv, .csv.gz or .parquet file, read as what its name says and
    checked to be that (unless `reader` is given: then read with it)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    if reader is None:
        fmt = table_format(path)
        if path.is_dir() and fmt != "parquet":
            raise ValueError(f"{path} is a folder, not a table file")
        if path.is_file():
            _check_content(path, fmt)
        reader = pd.read_parquet if fmt == "parquet" else _read_csv
    try:
        table = reader(path)
    except ValueError as e:
        if str(e).startswith(f"{path}: "):  # ours (a header the CSV reader would rename)
            raise
        raise _unreadable(path, e) from None
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise _unreadable(path, e) from None
    blank = [str(c) for c in table.columns if not isinstance(c, str) or not c.strip()]
    if blank:
        raise ValueError(f"{path}: a column has no name ({blank[0]!r}): name every column")
    return table


def _unreadable(path: Path, e: Exception) -> ValueError:
    why = (str(e).strip().splitlines() or [""])[0][:200]
    return ValueError(f"{path}: cannot read as a table ({type(e).__name__}: {why})")


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV table whose header names each column once (pandas would rename a second "HR"
    to "HR.1" without a word)."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    names = list(header.iloc[0]) if len(header) else []
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{path}: the header names these columns more than once: {dupes}")
    return pd.read_csv(path)


def _check_content(path: Path, fmt: str) -> None:
    """A ValueError where the file's first bytes contradict its name."""
    with open(path, "rb") as f:
        head = f.read(4)
    found = next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)
    if fmt == "parquet" and not head.startswith(b"PAR1"):
        raise ValueError(f"{path}: not a Parquet file{f' but {found}' if found else ''}")
    if fmt == "csv.gz" and not head.startswith(b"\x1f\x8b"):
        raise ValueError(f"{path}: not gzip-compressed{f' but {found}' if found else ''}")
    if fmt == "csv" and found:
        raise ValueError(f"{path}: not a CSV file but {found}")


def _normalise(table: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    out = {
        schema.id: table[schema.id].to_numpy(),
        schema.time: table[schema.time].to_numpy().astype(np.int64),
    }
    for v in schema.variables:
        col = table[v.name]
        if v.kind == "real":
            out[v.name] = col.to_numpy(dtype=float)
        else:
            out[v.name] = as_levels(col, v.levels)
    return pd.DataFrame(out)


def as_levels(col: pd.Series, levels: list[Any]) -> np.ndarray:
    """Cells as the schema's own level values (object array, None where missing).

    Index lookup matches 1.0 read from a CSV to the level 1, keeping the level's own type.
    """
    codes = level_codes(col, levels)
    values = np.asarray(levels + [None], dtype=object)
    return values[codes]


def arrow_schema(schema: Schema, id_type: Any = None) -> Any:
    """The Parquet column types of a cohort: one type per column whatever a chunk holds."""
    import pyarrow as pa

    fields = [pa.field(schema.id, id_type or pa.int64()), pa.field(schema.time, pa.int64())]
    for v in schema.variables:
        if v.kind == "real":
            fields.append(pa.field(v.name, pa.int64() if v.integer else pa.float64()))
        elif all(isinstance(lv, int) and not isinstance(lv, bool) for lv in v.levels):
            fields.append(pa.field(v.name, pa.int64()))
        elif all(isinstance(lv, bool) for lv in v.levels):
            fields.append(pa.field(v.name, pa.bool_()))
        elif all(isinstance(lv, float) for lv in v.levels):
            fields.append(pa.field(v.name, pa.float64()))
        else:
            fields.append(pa.field(v.name, pa.string()))
    return pa.schema(fields)


def _as_written(table: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """``table`` with its `integer` reals as whole numbers (pandas' nullable Int64: 10, not
    10.0, and missing stays missing), as the data had them, whichever family drew them."""
    whole = [v.name for v in schema.variables if v.kind == "real" and v.integer]
    if not whole:
        return table
    table = table.copy()
    for name in whole:
        table[name] = np.round(pd.to_numeric(table[name]).astype(float)).astype("Int64")
    return table


def write_tables(
    tables: Any, path: str | Path, schema: Schema, fmt: str | None = None
) -> tuple[Path, int]:
    """Stream long-table chunks to one CSV or Parquet file, atomically; returns (path, rows).

    `fmt` is "csv" or "parquet"; by default the file extension decides (.csv or .parquet;
    any other is a ValueError).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    parquet = (fmt or table_format(path, write=True)) == "parquet"
    rows = 0

    def write(tmp: Path) -> None:
        nonlocal rows
        writer = None
        try:
            for i, table in enumerate(tables):
                rows += len(table)
                table = _as_written(table, schema)
                if parquet:
                    if writer is None:
                        id_type = pa.array(table[schema.id].iloc[:1]).type
                        writer = pq.ParquetWriter(tmp, arrow_schema(schema, id_type))
                    writer.write_table(
                        pa.Table.from_pandas(table, schema=writer.schema, preserve_index=False)
                    )
                else:
                    table.to_csv(tmp, mode="a" if i else "w", header=i == 0, index=False)
        finally:
            if writer is not None:
                writer.close()

    return write_atomic(path, write), rows
