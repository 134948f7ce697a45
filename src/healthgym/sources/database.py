"""A read-only connection to the clinical database: DuckDB (a file, or a folder of Parquet/CSV
tables) or PostgreSQL, with rows streamed in batches.

URLs: `duckdb:///cdm.duckdb`, `duckdb:///folder` (paths as in SQLAlchemy; in a folder, each
`NAME.parquet`, `NAME.csv` or `NAME.csv.gz` is table NAME; files in a subfolder SUB are
tables of schema SUB, MIMIC-IV's `hosp/` and `icu/` those of `mimiciv_hosp` and
`mimiciv_icu`), `postgresql://user@host/db`.
Nothing is ever written to the database: DuckDB files open read-only, PostgreSQL sessions
are read-only transactions.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..extras import require
from .definition import SQL_NAME

TABLE_FILES = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.(parquet|csv|csv\.gz)$")
SCHEMA_OF_FOLDER = {"hosp": "mimiciv_hosp", "icu": "mimiciv_icu"}


class DatabaseError(ValueError):
    """The database refused a query or could not be opened (one line, the URL's secret out)."""


class Database:
    """`rows(sql)` for small answers, `batches(sql, size)` for the long table."""

    def __init__(self, url: str) -> None:
        self.url = url
        scheme = urlsplit(url).scheme
        if scheme == "duckdb":
            require("db", "reading a DuckDB database")
            self.kind, self.connection = "duckdb", _open_duckdb(url)
        elif scheme in ("postgresql", "postgres"):
            require("postgresql", "reading a PostgreSQL database")
            import psycopg

            try:
                self.connection = psycopg.connect(url, connect_timeout=20)
            except psycopg.Error as e:
                raise DatabaseError(f"cannot connect to {redact(url)}: {_first_line(e)}") from None
            self.connection.read_only = True
            self.kind = "postgresql"
        else:
            raise ValueError(
                f"--db {redact(url)}: give duckdb:///FILE.duckdb, duckdb:///FOLDER or "
                "postgresql://USER@HOST/DB"
            )

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with _translated():
            if self.kind == "duckdb":
                return self.connection.execute(sql).fetchall()
            with self.connection.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

    def batches(self, sql: str, size: int) -> Iterator[tuple[list[str], list[list[Any]]]]:
        """(column names, columns) of at most `size` rows at a time, never the whole answer."""
        with _translated():
            if self.kind == "duckdb":
                relation = self.connection.sql(sql)  # a relation streams; a cursor copies
                # DuckDB 2 renamed fetch_arrow_reader to to_arrow_reader
                stream = getattr(relation, "to_arrow_reader", None) or relation.fetch_arrow_reader
                reader = stream(size)
                for batch in reader:
                    yield batch.schema.names, [c.to_pylist() for c in batch.columns]
                return
            with self.connection.cursor(name="healthgym_cohort") as cur:
                cur.itersize = size
                cur.execute(sql)
                names = [c.name for c in cur.description]
                while rows := cur.fetchmany(size):
                    yield names, [list(c) for c in zip(*rows, strict=True)]

    def has_table(self, name: str) -> bool:
        try:
            self.rows(f"SELECT * FROM {name} LIMIT 0")
        except DatabaseError:
            if self.kind == "postgresql":
                self.connection.rollback()
            return False
        return True

    def close(self) -> None:
        spill = None
        if self.kind == "duckdb":
            spill = self.rows("SELECT current_setting('temp_directory')")[0][0]
        self.connection.close()
        if spill and Path(spill).name.startswith("healthgym-duckdb-"):
            shutil.rmtree(spill, ignore_errors=True)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """A driver's error as a one-line DatabaseError."""
    try:
        yield
    except DatabaseError:
        raise
    except Exception as e:
        if type(e).__module__.split(".")[0] not in ("duckdb", "_duckdb", "psycopg"):
            raise
        raise DatabaseError(f"the database refused the query: {_first_line(e)}") from None


def _open_duckdb(url: str) -> Any:
    """A read-only DuckDB connection whose query may spill to a temporary folder, so that
    `?memory_limit=1GB` (any DuckDB memory setting) bounds the process's memory."""
    import duckdb

    path = duckdb_path(url)
    if not path.exists():
        raise ValueError(f"--db {url}: {path} does not exist")
    config = _duckdb_settings(url)
    if path.is_file():
        try:
            return duckdb.connect(str(path), read_only=True, config=config)
        except duckdb.Error as e:
            raise DatabaseError(f"cannot open {path} with DuckDB: {_first_line(e)}") from None
    connection = duckdb.connect(config=config)
    found = 0
    for file in sorted(path.rglob("*")):
        match = TABLE_FILES.match(file.name)
        if not match or len(file.relative_to(path).parts) > 2:
            continue
        folder = file.parent.name if file.parent != path else None
        schema = SCHEMA_OF_FOLDER.get(folder, folder) if folder else None
        if schema is not None:
            if not SQL_NAME.match(schema):
                continue
            connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        reader = "read_parquet" if file.suffix == ".parquet" else "read_csv_auto"
        name = f"{schema}.{match['name']}" if schema else match["name"]
        quoted = str(file).replace("'", "''")
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM {reader}('{quoted}')")
        found += 1
    if not found:
        raise ValueError(f"--db {url}: no NAME.parquet, NAME.csv or NAME.csv.gz tables in {path}")
    return connection


def _duckdb_settings(url: str) -> dict[str, str]:
    """`memory_limit` and `threads` from the URL's query (`duckdb:///cdm.duckdb?threads=2`);
    spilled data go to a temporary folder (a read-only database cannot hold them)."""
    allowed = {"memory_limit", "threads"}
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(f"--db: unknown DuckDB settings {unknown}; known: {sorted(allowed)}")
    return query | {"temp_directory": tempfile.mkdtemp(prefix="healthgym-duckdb-")}


def duckdb_path(url: str) -> Path:
    """The file or folder of `duckdb:///PATH`: PATH relative to the working folder as in
    SQLAlchemy (`duckdb:////abs/cdm.duckdb` is absolute), or `/PATH` where only that exists."""
    path = urlsplit(url).path
    relative = Path(path[1:]) if path.startswith("/") else Path(path)
    return relative if relative.exists() or not Path(path).exists() else Path(path)


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
