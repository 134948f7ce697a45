"""A throwaway PostgreSQL server for the tests (initdb into a temporary folder, on a free
port, trust authentication on localhost only), and CDM tables loaded into it.

CI installs Debian's postgresql package (.ci/run) and sets HEALTHGYM_POSTGRES_TEST=required,
so there the test fails, not skips, when no server can be started.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server with its data in a new temporary folder; yield its URL; stop it and
    remove the folder. (Not under pytest's tmp_path: the postgres user cannot enter it.)"""
    folder = Path(tempfile.mkdtemp(prefix="healthgym-pg-"))
    try:
        with _server(folder) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _server(folder: Path) -> Iterator[str]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "pgdata"
    data.mkdir(parents=True)
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        shutil.chown(folder, "postgres")
        shutil.chown(data, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    run = lambda *args: subprocess.run(  # noqa: E731
        [*prefix, *args], check=True, capture_output=True, text=True, timeout=120
    )
    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=localhost -c fsync=off"
    log = folder / "server.log"
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    try:
        yield f"postgresql://postgres@localhost:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")


def load_tables(url: str, tables: dict[str, pd.DataFrame], schema: str | None = None) -> None:
    """Create each table in the database at `url` and COPY the frame's rows into it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        if schema:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, frame in tables.items():
            qualified = f"{schema}.{name}" if schema else name
            columns = ", ".join(f"{c} {_sql_type(frame[c])}" for c in frame.columns)
            con.execute(f"CREATE TABLE {qualified} ({columns})")
            rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False)
            with con.cursor().copy(f"COPY {qualified} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        con.execute("ANALYZE")  # as a loaded CDM has: the planner's row counts


def _sql_type(col: pd.Series) -> str:
    if pd.api.types.is_datetime64_any_dtype(col):
        return "TIMESTAMP"
    if pd.api.types.is_integer_dtype(col):
        return "BIGINT"
    if pd.api.types.is_float_dtype(col):
        return "DOUBLE PRECISION"
    present = col.dropna()
    if (
        len(present)
        and hasattr(present.iloc[0], "isoformat")
        and not isinstance(present.iloc[0], str)
    ):
        return "DATE"
    if col.isna().all():
        return "TIMESTAMP"
    if len(present) and isinstance(present.iloc[0], int | np.integer):
        return "BIGINT"
    return "TEXT"
