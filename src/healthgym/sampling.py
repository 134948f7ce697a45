"""Many patients to a Parquet dataset: part files written by one or several processes.

The patients are cut into chunks of `CHUNK` (the last one shorter); chunk k has ids
``k * CHUNK + 1 ...`` and its own seed derived from (seed, k), and becomes
``part-<k>.parquet``. So the same seed and n give the same patients whatever number of
processes wrote them, and each process holds one sampling batch at a time. The folder reads
as one dataset in pandas (``pd.read_parquet(folder)``), pyarrow, DuckDB and Spark.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .data.atomic import remove_stale_temporaries
from .training.runtime import usable_cores
from .training.seeding import MAX_SEED, derive_seed

#: Patients per part file.
CHUNK = 100_000
_PART_TAG = 21  # keeps the chunk seeds apart from other streams of a seed


def part_name(k: int) -> str:
    """The file of chunk k (zero-padded, so names sort in id order)."""
    return f"part-{k:06d}.parquet"


def write_parts(
    run_dir: str | Path,
    n: int,
    out_dir: str | Path,
    *,
    seed: int,
    nproc: int = 1,
    chunk: int = CHUNK,
    length: int | None = None,
    batch_size: int = 4096,
) -> list[Path]:
    """Sample `n` patients from the model in `run_dir` into `out_dir` (a new folder);
    the part files, in id order. `nproc` processes share the chunks (each loads the model);
    more than the usable cores are capped at them, with a warning."""
    if n < 1 or chunk < 1 or nproc < 1:
        raise ValueError(f"n, chunk and nproc must be >= 1, got {n}, {chunk}, {nproc}")
    cores = usable_cores()
    if nproc > cores:
        warnings.warn(f"nproc {nproc} capped at the {cores} usable cores", stacklevel=2)
        nproc = cores
    out = Path(out_dir)
    remove_stale_temporaries(out)  # of a sampling run killed before it could clean up
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder: give a new folder")
    held = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if held:
        more = f" and {len(held) - 3} more" if len(held) > 3 else ""
        raise FileExistsError(
            f"{out} is not an empty folder (it holds {', '.join(held[:3])}{more}): "
            "give a new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    chunks = [(k, min(chunk, n - k * chunk)) for k in range((n + chunk - 1) // chunk)]
    jobs = [(str(run_dir), str(out), seed, chunks[r::nproc], chunk, length, batch_size)
            for r in range(min(nproc, len(chunks)))]  # fmt: skip
    if len(jobs) == 1:
        _write_chunks(*jobs[0])
    else:
        threads = max(1, cores // len(jobs))
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            len(jobs), mp_context=ctx, initializer=_start_worker, initargs=(threads, os.getpid())
        ) as pool:
            list(pool.map(_pool_write_chunks, *zip(*jobs, strict=True)))
    return [out / part_name(k) for k, _ in chunks]


_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def _start_worker(threads: int, parent: int) -> None:
    """A writing process's set-up: its share of the cores, and (Linux) a SIGTERM when its
    parent ends, so a sampling run killed (even with SIGKILL) leaves no process writing on;
    SIGTERM removes a part being written (`atomic`)."""
    os.environ.setdefault("HEALTHGYM_THREADS", str(threads))
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _pool_write_chunks(*job: Any) -> None:
    """`_write_chunks` in a pool process. A stop signal while a part is written raises
    SystemExit there (the part is removed on the way out, `atomic`); the pool would catch it
    and keep the process waiting for work, so the process ends here instead."""
    try:
        _write_chunks(*job)
    except SystemExit as e:
        os._exit(e.code if isinstance(e.code, int) else 1)


def _write_chunks(
    run_dir: str,
    out: str,
    seed: int,
    chunks: list[tuple[int, int]],
    chunk: int,
    length: int | None,
    batch_size: int,
) -> None:
    """One process's chunks: load the model, sample each chunk with its seed, write it."""
    from .data.cohort import write_tables
    from .models.registry import load_model
    from .training.runtime import cpu_threads, resolve_threads

    model = load_model(run_dir)
    schema = model.schema
    for k, size in chunks:
        part_seed = derive_seed(seed, _PART_TAG, k) & MAX_SEED  # a seed sample() takes
        kw: dict[str, Any] = {"seed": part_seed, "batch_size": batch_size}
        if length is not None:
            kw["length"] = length
        with cpu_threads(resolve_threads()):
            tables = model.sample_batches(size, **kw)
            write_tables(_offset(tables, schema.id, k * chunk), Path(out) / part_name(k), schema)


def _offset(tables: Any, id_col: str, by: int) -> Any:
    """Shift each table's patient ids by `by` (chunk k's ids follow chunk k - 1's)."""
    for table in tables:
        table[id_col] = table[id_col] + by
        yield table
