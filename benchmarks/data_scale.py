"""Peak memory of holding a large cohort for v1 training: in memory vs Parquet shards (issue 8).

    python -m benchmarks.data_scale [--patients 100000] [--length 60] [--no-record]

A random cohort of the ART-for-HIV layout (15 columns: PatientID, Timestep, 3 Box-Cox reals,
Gender and Ethnic static, 5 regimen categoricals, 3 measurement flags; 37 design columns) is
written to Parquet in row groups of 1,000 patients. Each mode then runs in a fresh subprocess
that reports its own peak RSS (``ru_maxrss``) and seconds (imports excluded):

- ``in-memory``: what ``HealthGymV1.fit(Cohort)`` holds before training: ``Cohort.from_parquet``
  (pandas), ``Encoder.fit``, ``transform``, ``design_matrix`` and the float32 tensor;
- ``shards 1/1``: ``ParquetShards.fit_encoder`` (one column at a time) and ``design`` of all
  patients (chunks of 4,096) into one float32 array;
- ``shards rank 0 of 4`` / ``rank 1 of 4``: what one of 4 processes holds (rank 0 also fits
  the encoder; the others receive it, here read from JSON);
- ``train ...``: the same plus ``V1Trainer.fit`` up to its first generator step (the
  trainer's validation, fingerprint and correlation target; hidden 128, batch 256), one
  process; and a 2-process Gloo run on shards (``HealthGymV1.fit(ParquetShards)`` under the
  elastic launcher), whose processes report their own peaks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import header, load, machine, record, table
from healthgym.datasets.healthgym_layouts import ART_CODES, LAYOUTS

SECTION = "## Data at scale (issue 8): cohorts larger than memory-friendly tensors"
PER_GROUP = 1000  # patients per Parquet row group
REALS = {"VL": (3.7, 2.0), "CD4": (6.1, 0.6), "Rel CD4": (3.0, 0.5)}  # lognormal mu, sigma

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
import healthgym as hg
from healthgym.datasets.healthgym_layouts import LAYOUTS
from healthgym.models.v1.model import design_matrix
from healthgym.data.parquet_shards import ParquetShards

mode, path, encoder_json = sys.argv[1], sys.argv[2], sys.argv[3]
schema = LAYOUTS["art-for-hiv"].schema()
SETTINGS = dict(curriculum=(10, 20, 30, 40, 50, 60), batch_size=256, epochs=1, device="cpu")
t0 = time.perf_counter()
out = {}
if mode == "in-memory":
    cohort = hg.Cohort.from_parquet(path, schema)
    encoder = hg.Encoder(schema).fit(cohort)
    x = torch.from_numpy(design_matrix(encoder.transform(cohort))).float()
    out["tensor_mib"] = x.numel() * 4 / 2**20
elif mode.startswith("shards"):
    rank, world = (int(v) for v in mode.split()[1].split("/"))
    shards = ParquetShards(path, schema)
    if rank == 0:
        encoder = shards.fit_encoder()
        encoder.save(encoder_json)
    else:
        encoder = hg.Encoder.load(encoder_json)
    x, lengths = shards.design(encoder, rank, world)
    out["tensor_mib"] = x.numel() * 4 / 2**20
elif mode == "train in-memory":
    model = hg.HealthGymV1(**SETTINGS)
    model.fit(hg.Cohort.from_parquet(path, schema), sys.argv[4], max_minutes=1e-6, progress=False)
elif mode == "train shards 1/1":
    model = hg.HealthGymV1(**SETTINGS)
    model.fit(ParquetShards(path, schema), sys.argv[4], max_minutes=1e-6, progress=False)
elif mode == "train shards x/2":
    from benchmarks.data_scale import train_process
    from healthgym.training import distributed
    peaks = distributed.launch(train_process, (path, sys.argv[4], SETTINGS), 2)
    out["rank_peaks_mib"] = [peaks[r] for r in sorted(peaks)]
out["seconds"] = time.perf_counter() - t0
out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out), file=sys.stderr)
"""

MODES = (
    "in-memory",
    "shards 0/1",
    "shards 0/4",
    "shards 1/4",
    "train in-memory",
    "train shards 1/1",
    "train shards x/2",
)


def train_process(path: str, run_dir: str, settings: dict[str, Any]) -> float:
    """One process of the 2-process run: fit on its shard up to one generator step."""
    import resource

    import healthgym as hg
    from healthgym.data.parquet_shards import ParquetShards

    schema = LAYOUTS["art-for-hiv"].schema()
    model = hg.HealthGymV1(**settings)
    model.fit(ParquetShards(path, schema), run_dir, max_minutes=1e-6, progress=False)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_cohort(path: Path, n: int, length: int, seed: int = 0) -> int:
    """A random ART-layout cohort of n patients x length steps, streamed to Parquet; bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = LAYOUTS["art-for-hiv"].schema()
    rng = np.random.default_rng(seed)
    writer = None
    try:
        for start in range(0, n, PER_GROUP):
            m = min(PER_GROUP, n - start)
            rows = m * length
            cols: dict[str, Any] = {
                "PatientID": np.repeat(np.arange(start + 1, start + m + 1), length),
                "Timestep": np.tile(np.arange(length), m),
            }
            for name, (mu, sigma) in REALS.items():
                cols[name] = rng.lognormal(mu, sigma, rows)
            for name, codes in ART_CODES.items():
                levels = np.asarray(list(codes.values()), dtype=object)
                static = schema[name].role == "static"
                draws = levels[rng.integers(0, len(levels), m if static else rows)]
                cols[name] = np.repeat(draws, length) if static else draws
            frame = pd.DataFrame({c: cols[c] for c in [schema.id, schema.time, *schema.names]})
            batch = pa.Table.from_pandas(frame, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, batch.schema)
            writer.write_table(batch, row_group_size=rows)
    finally:
        if writer is not None:
            writer.close()
    return path.stat().st_size


def measure(mode: str, path: Path, tmp: Path) -> dict[str, Any]:
    """Run one mode in a fresh subprocess; its peak RSS and seconds."""
    run_dir = tmp / f"run-{mode.replace(' ', '-').replace('/', '-')}"
    cmd = [sys.executable, "-c", _CHILD, mode, str(path), str(tmp / "encoder.json"), str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(f"{mode} failed:\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    row: dict[str, Any] = {"mode": mode, "seconds": stats["seconds"]}
    if "rank_peaks_mib" in stats:
        row["peak RSS MiB"] = " / ".join(f"{p:.0f}" for p in stats["rank_peaks_mib"])
    else:
        row["peak RSS MiB"] = f"{stats['peak_mib']:.0f}"
    row["float32 tensor MiB"] = f"{stats['tensor_mib']:.0f}" if "tensor_mib" in stats else "-"
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.data_scale", description=__doc__.split("\n")[0]
    )
    p.add_argument("--patients", type=int, default=100_000)
    p.add_argument("--length", type=int, default=60)
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES)
    )
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="hg-scale-") as tmp:
        path = Path(tmp) / "art.parquet"
        size = write_cohort(path, args.patients, args.length)
        rows = []
        for mode in args.modes.split(","):
            rows.append(measure(mode, path, Path(tmp)))
            print(rows[-1], flush=True)
    text = "\n".join(
        [
            header(
                "Peak memory: a large cohort in memory vs Parquet shards",
                "benchmarks.data_scale",
                argv,
                info,
            ),
            f"{args.patients:,} patients x {args.length} steps "
            f"({args.patients * args.length:,} rows), ART-for-HIV layout (15 columns, 37 design "
            f"columns), Parquet {size / 2**20:.0f} MiB in row groups of {PER_GROUP:,} patients; "
            f"each mode in a fresh subprocess, peak RSS = "
            f"ru_maxrss (per process for the 2-process run).\n",
            table(rows),
            f"\nLoad average at the end: {load()}.",
        ]
    )
    print(text)
    if not args.no_record:
        record(text, section=SECTION)


if __name__ == "__main__":
    main()
