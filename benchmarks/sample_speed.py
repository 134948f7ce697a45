"""Sampling throughput and peak memory of `healthgym sample` writing Parquet.

    python -m benchmarks.sample_speed [--patients 1000,10000,100000] [--length 60] [--no-record]

A HealthGymV1 run is trained for one generator step on the ART-shaped cohort (Health Gym v1
sizes; sampling speed does not depend on the weights). Each size then runs the CLI path,
``healthgym sample RUN -n N --length L -o OUT.parquet --seed 0`` (``sample_batches`` in
chunks of 1,024 patients -> ``write_tables``), in a fresh subprocess that reports its own
peak RSS (``ru_maxrss``, the high-water mark of resident memory) and the seconds spent in the
command (Python start-up and imports excluded). Throughput is patients x steps per second.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import healthgym as hg
from benchmarks.cohorts import art_cohort
from benchmarks.common import header, load, machine, record, table

_CHILD = """
import json, resource, sys, time
from healthgym.cli import main
t0 = time.perf_counter()
main(sys.argv[1:], standalone_mode=False)
seconds = time.perf_counter() - t0
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024}), file=sys.stderr)
"""


def train_run(run_dir: Path, **settings: Any) -> Path:
    """A run folder holding a HealthGymV1 trained for one generator step on the ART shape."""
    model = hg.HealthGymV1(**settings)
    model.fit(art_cohort(), run_dir, max_minutes=1e-6, progress=False)
    return run_dir


def sample_once(run_dir: Path, n: int, length: int, out: Path) -> dict[str, Any]:
    """Run the CLI in a subprocess; its seconds, peak RSS and what it wrote."""
    cmd = [
        sys.executable,
        "-c",
        _CHILD,
        "sample",
        str(run_dir),
        "-n",
        str(n),
        "--length",
        str(length),
        "-o",
        str(out),
        "--seed",
        "0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    size = out.stat().st_size
    out.unlink()
    return {
        "patients": n,
        "steps": length,
        "rows": n * length,
        "seconds": stats["seconds"],
        "patient-steps/s": n * length / stats["seconds"],
        "peak RSS MiB": stats["peak_mib"],
        "Parquet MiB": size / 2**20,
    }


def run(sizes: list[int], length: int = 60, **settings: Any) -> list[dict[str, Any]]:
    """One row per number of patients, smallest first."""
    with tempfile.TemporaryDirectory(prefix="hg-sample-") as tmp:
        run_dir = train_run(Path(tmp) / "run", **settings)
        return [sample_once(run_dir, n, length, Path(tmp) / "out.parquet") for n in sorted(sizes)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.sample_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--patients", default="1000,10000,100000")
    p.add_argument("--length", type=int, default=60)
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    info = machine()
    rows = run([int(n) for n in args.patients.split(",")], args.length)
    text = "\n".join(
        [
            header("Sampling to Parquet", "benchmarks.sample_speed", argv, info),
            "`healthgym sample` in a fresh subprocess per size, ART shape (22 design columns, "
            "hidden 128), 1 torch thread (the default).\n",
            table(rows),
            f"\nLoad average at the end: {load()}.",
        ]
    )
    print(text)
    if not args.no_record:
        record(text)


if __name__ == "__main__":
    main()
