"""`build_cohort`: a definition run against a database, streamed to Parquet, with its schema.

The definition is checked first against the database (tables present, stays found, every
variable has rows, no variable mixes units), then the long query streams batch by batch into
a temporary Parquet file that is renamed into place only when complete. The schema is built
from the definition (roles, kinds) and from statistics gathered while streaming (levels,
missing values, whole numbers, skew for the Box-Cox choice), so nothing is read twice.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import write_atomic
from ..data.inference import BOXCOX_MIN_SKEW
from ..data.schema import Schema, Variable, _plain
from .database import Database, redact
from .definition import Definition, Item, read_definition
from .query import cohort_sql, stays_sql, units_sql

BATCH_ROWS = 65_536
#: A categorical column with more distinct values than this is an error (an id, free text).
MAX_LEVELS = 100


@dataclass(frozen=True)
class BuiltCohort:
    path: Path
    schema_path: Path
    schema: Schema
    stays: int
    rows: int
    seconds: float


def build_cohort(
    definition: Definition | str | Path,
    db: str,
    out: str | Path,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[int], Any] | None = None,
) -> BuiltCohort:
    """Build the long table `out` (Parquet) and `OUT.schema.yaml` beside it from database `db`.

    `definition` is a Definition or a YAML file (docs/cohorts.md). Existing files are
    replaced only whole (atomic renames); the CLI refuses to replace them unless asked.
    `progress` is called with the number of rows of each batch written.
    """
    started = time.perf_counter()
    d = definition if isinstance(definition, Definition) else read_definition(definition)
    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"{out}: the cohort is written as Parquet; name it OUT.parquet")
    schema_path = out.with_name(out.stem + ".schema.yaml")
    database = Database(db)
    try:
        stays = check_against(d, database)
        stats = {s.name: _Stats(kind=d.layout.statics[s.source].kind) for s in d.statics}
        stats |= {it.name: _Stats(kind=_kind(it)) for it in d.items}
        rows = [0]

        def write(tmp: Path) -> None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            meta = {
                "healthgym.definition": d.text,
                "healthgym.source": redact(db),
                "healthgym.built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            }
            fields = [pa.field(d.id, pa.int64()), pa.field(d.time, pa.int64())]
            fields += [pa.field(n, _arrow_type(s.kind, n, d)) for n, s in stats.items()]
            schema = pa.schema(fields).with_metadata(meta)
            with pq.ParquetWriter(tmp, schema) as writer:
                for names, columns in database.batches(cohort_sql(d), batch_rows):
                    arrays = [
                        pa.array(col, type=schema.field(i).type) for i, col in enumerate(columns)
                    ]
                    for name, col in zip(names[2:], columns[2:], strict=True):
                        stats[name].update(col)
                    writer.write_batch(pa.record_batch(arrays, schema=schema))
                    rows[0] += len(columns[0])
                    if progress is not None:
                        progress(len(columns[0]))
            built.append(_schema(d, stats))

        built: list[Schema] = []
        write_atomic(out, write)
        built[0].to_yaml(schema_path)
    finally:
        database.close()
    return BuiltCohort(out, schema_path, built[0], stays, rows[0], time.perf_counter() - started)


def check_against(d: Definition, database: Database) -> int:
    """The number of stays; ValueErrors for what the database contradicts: a missing table,
    no stays, a variable without rows, a variable whose rows mix units."""
    layout = d.layout
    needed = {layout.stays[d.stay_table].table: "the stays"}
    for s in d.statics:
        needed |= {t: f"static {s.name!r}" for t in layout.statics[s.source].tables}
    needed |= {layout.domains[it.domain].table: f"variable {it.name!r}" for it in d.items}
    for table, user in needed.items():
        name = layout.table(table, d.database_schema)
        if not database.has_table(name):
            raise ValueError(f"table {name} (read for {user}) is not in the database")
    stays = int(database.rows(f"WITH stays AS ({stays_sql(d)}) SELECT COUNT(*) FROM stays")[0][0])
    if not stays:
        concepts = f" with concepts {list(d.stay_concepts)}" if d.stay_concepts else ""
        raise ValueError(f"no stays: {d.stay_table} has no rows{concepts}")
    units: dict[int, set[str]] = {}
    for var, unit, _count in database.rows(units_sql(d)):
        units.setdefault(int(var), set())
        if unit is not None:
            units[int(var)].add(str(unit))
    for i, item in enumerate(d.items):
        table = layout.domains[item.domain].table
        if i not in units:
            raise ValueError(
                f"variable {item.name!r}: no {table} rows with concepts {list(item.concepts)} "
                "for the cohort's stays"
            )
        if len(units[i]) > 1 and item.agg not in ("count", "any"):  # values, not events
            raise ValueError(
                f"variable {item.name!r} mixes units {', '.join(sorted(units[i]))} in {table}; "
                "keep one with `unit:` (or split the variable)"
            )
    return stays


def _kind(item: Item) -> str:
    return item.kind or ("binary" if item.agg == "any" else "real")


def _arrow_type(kind: str, name: str, d: Definition) -> Any:
    import pyarrow as pa

    for s in d.statics:
        if s.name == name:
            levels = d.layout.statics[s.source].levels
            if kind == "real":
                return pa.float64()
            return pa.int64() if levels and isinstance(levels[0], int) else pa.string()
    item = next(it for it in d.items if it.name == name)
    return pa.int64() if item.agg in ("count", "any") else pa.float64()


class _Stats:
    """What the schema needs of a column, gathered batch by batch."""

    def __init__(self, kind: str) -> None:
        self.kind, self.present, self.missing, self.whole = kind, 0, False, True
        self.low, self.shift, self.sums = np.inf, None, np.zeros(3)
        self.levels: set[Any] = set()

    def update(self, values: list[Any]) -> None:
        kept = [v for v in values if v is not None and v == v]
        self.missing |= len(kept) < len(values)
        if not kept:
            return
        self.present += len(kept)
        if self.kind != "real":
            self.levels.update(kept)
            if len(self.levels) > MAX_LEVELS:
                raise ValueError(f"more than {MAX_LEVELS} distinct values: not categorical")
            return
        x = np.asarray(kept, dtype=float)
        self.whole &= bool(np.all(x == np.round(x)) and np.abs(x).max() < 2**53)
        self.low = min(self.low, float(x.min()))
        if self.shift is None:
            self.shift = float(x.mean())
        c = x - self.shift
        self.sums += [c.sum(), (c**2).sum(), (c**3).sum()]

    def skew(self) -> float:
        n = self.present
        m1, m2, m3 = self.sums / n
        var = m2 - m1**2
        return 0.0 if var <= 1e-12 * max(1.0, m2) else (m3 - 3 * m1 * m2 + 2 * m1**3) / var**1.5


def _schema(d: Definition, stats: dict[str, _Stats]) -> Schema:
    roles = {s.name: "static" for s in d.statics} | {it.name: it.role for it in d.items}
    fixed = {s.name: d.layout.statics[s.source].levels for s in d.statics}
    fixed |= {it.name: (0, 1) for it in d.items if it.agg == "any"}
    outcomes = {s.name for s in d.statics if d.layout.statics[s.source].outcome}
    variables = []
    for name, st in stats.items():
        where = f"variable {name!r}"
        if not st.present:
            raise ValueError(f"{where} has no value in any stay (check its concepts and range)")
        missing = "flag" if st.missing else "none"
        if st.kind == "real":
            transform = "boxcox" if st.low >= 0 and abs(st.skew()) > BOXCOX_MIN_SKEW else "minmax"
            variables.append(
                Variable(
                    name,
                    "real",
                    roles[name],
                    transform=transform,
                    missing=missing,
                    integer=st.whole,
                )
            )
            continue
        levels = list(fixed.get(name) or sorted(_level(v) for v in st.levels))
        if len(levels) < 2:
            raise ValueError(f"{where} has the single value {levels[0]!r}: nothing to model")
        kind = "binary" if len(levels) == 2 else "categorical"
        variables.append(
            Variable(
                name, kind, roles[name], levels=levels, missing=missing, outcome=name in outcomes
            )
        )
    return Schema(id=d.id, time=d.time, variables=variables)


def _level(value: Any) -> Any:
    value = _plain(value)
    return int(value) if isinstance(value, float) and value == int(value) else value


def read_provenance(path: str | Path) -> dict[str, str] | None:
    """What `build_cohort` recorded in a Parquet file it wrote (the definition's text, the
    database without its password, the build time); None for any other file."""
    path = Path(path)
    if path.suffix != ".parquet" or not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    found = {
        key: meta[f"healthgym.{key}".encode()].decode()
        for key in ("definition", "source", "built")
        if f"healthgym.{key}".encode() in meta
    }
    if "definition" not in found:
        return None
    return {
        "definition": found["definition"],
        "database": found.get("source", "?"),
        "built": found.get("built", "?"),
    }
