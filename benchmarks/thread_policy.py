"""Which CPU thread rule trains fastest, on an idle machine and on one whose cores another
program keeps busy (issue 27): healthgym's "auto" (the idle cores, read from /proc/stat) vs
the plain rules (every usable core, with OpenMP's default or a passive wait policy).

Each (load, rule) trains the default model on 600 demo patients for a fixed time in a fresh
process (OMP_WAIT_POLICY is read when OpenMP starts) and reports optimizer steps per second;
the rules are compared as ratios within one run and one load.

    python -m benchmarks.thread_policy [--seconds 40] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks.common import header, machine, record, table

SECTION = "## Thread policy (issue 27): idle cores vs a fixed rule, on an idle and a busy machine"

CHILD = """
import json, time
import healthgym as hg
from healthgym.training.runtime import resolve_threads
cohort = hg.datasets.demo()
cohort = cohort.subset(cohort.ids[:600])
model = hg.HealthGym(seed=0, patience=1000, epochs=1000)
threads = resolve_threads()  # what fit will take (an idle-core reading is kept for 30 s)
t0 = time.perf_counter()
model.fit(cohort, max_minutes={minutes}, progress=False)
print(json.dumps({{"steps": model.result.steps, "seconds": time.perf_counter() - t0,
                  "threads": threads}}))
"""


def rules(cores: int) -> dict[str, dict[str, str]]:
    """Environment of each rule (HEALTHGYM_THREADS unset: "auto")."""
    return {
        "auto (idle cores)": {},
        f"all {cores} cores, active wait": {"HEALTHGYM_THREADS": str(cores)},
        f"all {cores} cores, passive wait": {
            "HEALTHGYM_THREADS": str(cores),
            "OMP_WAIT_POLICY": "PASSIVE",
        },
    }


def train(env: dict[str, str], seconds: float) -> dict[str, float]:
    """Steps per second of one timed fit in a fresh process with ``env``."""
    base = {
        k: v for k, v in os.environ.items() if k not in ("HEALTHGYM_THREADS", "OMP_WAIT_POLICY")
    }
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(minutes=seconds / 60)],
        env={**base, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {"steps_per_s": row["steps"] / row["seconds"], "threads": row["threads"]}


def busy(n: int) -> list[subprocess.Popen]:
    """``n`` processes that keep a core each busy (another user's work)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    info = machine()
    rows = []
    for load in ("idle", f"{cores} busy processes"):
        others = busy(cores) if load != "idle" else []
        time.sleep(1.0 if others else 0.0)
        try:
            results = {name: train(env, args.seconds) for name, env in rules(cores).items()}
        finally:
            for p in others:
                p.kill()
        auto = results["auto (idle cores)"]["steps_per_s"]
        for name, r in results.items():
            rate = r["steps_per_s"]
            rows.append({"machine": load, "thread rule": name, "threads": int(r["threads"]),
                         "steps/s": rate, "vs auto": rate / auto})  # fmt: skip
    text = header("Thread policy", "benchmarks.thread_policy", None, info) + (
        f"\nThe default model on 600 demo patients, {args.seconds:g} s of training per cell, "
        "each in a fresh process.\n\n" + table(rows)
    )
    print(text)
    if not args.no_append:
        record(text, section=SECTION)


if __name__ == "__main__":
    main()
