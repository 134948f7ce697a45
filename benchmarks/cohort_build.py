"""How `healthgym cohort` scales (issue 31): an OMOP CDM of 100,000 ICU stays in DuckDB
turned into a long table, streamed to Parquet, against the same query's answer held whole.

    python -m benchmarks.cohort_build [--stays 4000,100000] [--memory-limit 512MB] [--no-record]

The CDM is the bundled demo cohort (4,000 stays, 48 h in 4-hour steps, 12 variables) written
`stays / 4000` times under new ids (`healthgym.sources.demo_cdm`), so every size has the same
shape. For each size, in a fresh process each:

- streamed: `build_cohort` with the shipped `omop-icu-demo` definition (checks, the query run
  in DuckDB, batches of 65,536 rows written to Parquet, the schema), DuckDB's memory capped
  at `--memory-limit` (`duckdb:///cdm.duckdb?memory_limit=1GB`; beyond it DuckDB spills to
  a temporary folder): wall seconds and peak resident memory (ru_maxrss);
- held: the same SQL under the same cap, fetched whole into pandas (what a builder that
  holds its answer needs);
- imports: the process with healthgym and DuckDB imported and nothing run (the floor).

Peak memory beyond the imports, streamed against held, says whether the builder holds the
result; the CDM file's size says what holding the database would cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import header, machine, publish, table

SECTION = "## Cohorts from a clinical database (issue 31)"
DEMO_STAYS = 4000

CHILD = """
import json, resource, sys, time
from pathlib import Path
import duckdb, yaml
from healthgym.sources import build_cohort, example_definition, parse_definition
from healthgym.sources.query import cohort_sql
mode, cdm, out, limit = sys.argv[1:5]
d = parse_definition(yaml.safe_load(example_definition("omop-icu-demo")))
t0 = time.perf_counter()
rows = 0
if mode == "streamed":
    rows = build_cohort(d, "duckdb:///" + cdm + "?memory_limit=" + limit, out).rows
elif mode == "held":
    con = duckdb.connect(cdm, read_only=True, config={"memory_limit": limit})
    rows = len(con.sql(cohort_sql(d)).df())
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rows": rows,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(mode: str, cdm: Path, out: Path, limit: str) -> dict[str, float]:
    """The child's figures; NaN where it failed (its last error line printed)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(cdm), str(out), limit],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        print(f"{mode} failed: {done.stderr.strip().splitlines()[-1][:300]}", flush=True)
        return {"seconds": float("nan"), "rows": 0, "rss_mb": float("nan")}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stays", default="4000,100000", help="CDM sizes (multiples of 4,000)")
    p.add_argument("--memory-limit", default="512MB", help="DuckDB's memory_limit in both")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    from healthgym.sources.demo_cdm import write_demo_cdm

    info = machine()
    folder = Path(tempfile.mkdtemp(prefix="hg-cohort-build-"))
    rows = []
    for stays in (int(x) for x in args.stays.split(",")):
        if stays % DEMO_STAYS:
            raise SystemExit(f"--stays: {stays} is not a multiple of {DEMO_STAYS}")
        cdm = folder / f"cdm-{stays}.duckdb"
        t0 = time.perf_counter()
        write_demo_cdm(cdm, copies=stays // DEMO_STAYS)
        made = time.perf_counter() - t0
        out = folder / f"cohort-{stays}.parquet"
        floor = measure("imports", cdm, out, args.memory_limit)
        streamed = measure("streamed", cdm, out, args.memory_limit)
        held = measure("held", cdm, out, args.memory_limit)
        rows.append(
            {
                "stays": stays,
                "rows out": int(streamed["rows"]),
                "CDM MB": cdm.stat().st_size / 2**20,
                "Parquet MB": out.stat().st_size / 2**20 if out.exists() else float("nan"),
                "streamed s": streamed["seconds"],
                "stays/s": stays / streamed["seconds"],
                "streamed peak MB": streamed["rss_mb"],
                "held peak MB": held["rss_mb"],
                "imports MB": floor["rss_mb"],
                "streamed / held (above imports)": (streamed["rss_mb"] - floor["rss_mb"])
                / max(held["rss_mb"] - floor["rss_mb"], 1e-9),
                "CDM written s": made,
            }
        )
        print(rows[-1], flush=True)
        cdm.unlink()
        out.unlink(missing_ok=True)
    text = (
        header("Building a cohort from an OMOP CDM (DuckDB)", "benchmarks.cohort_build", argv, info)
        + "\n"
        + table(rows)
        + "\n"
    )
    return publish(text, args.no_record, SECTION)


if __name__ == "__main__":
    main()
