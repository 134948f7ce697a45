"""`python -m benchmarks.peers`: train, sample and score every model on one cohort.

Each model runs in its own worker process (`--worker NAME`, same arguments), so the thread
setting, memory and any crash stay with that model; its output goes to
`runs/peers/<cohort>/<model>/worker.log`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

from .harness import (
    COHORTS,
    DEFAULT_MODELS,
    LOG,
    MODELS,
    append_section,
    build_table,
    reference_result,
    run_model,
    section,
)

ROOT = Path(__file__).resolve().parents[2]
#: Beyond the training budget: data preparation, sampling and the evaluation.
EXTRA_SECONDS = 1800


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    p.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, in order; known: {', '.join(MODELS)}",
    )
    p.add_argument("--cohort", choices=COHORTS, default="demo")
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for every model")
    p.add_argument("--out", type=Path, default=Path("runs/peers"), help="output folder")
    p.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--no-append", action="store_true", help="print the table only")
    p.add_argument("--label", default="", help="text added to the section title")
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="leave out the row that scores the real holdout as if it were synthetic",
    )
    p.add_argument(
        "--fit-only", action="store_true", help="train and report progress; no sample or score"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    if not args.minutes > 0 or args.threads < 1:
        p.error("--minutes must be > 0 and --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.worker:
        warnings.simplefilter("ignore")
        out = args.out / args.cohort / args.worker
        result = run_model(args.worker, args.cohort, args.minutes, args.threads, out, args.fit_only)
        return 0 if result.get("status") != "failed" else 1

    started = datetime.datetime.now(datetime.UTC)
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    args_text = shlex.join(argv if argv is not None else sys.argv[1:])
    command = f"{python} -m benchmarks.peers {args_text}"
    threads = str(args.threads)
    env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    results = []
    for name in args.models:
        out = args.out / args.cohort / name
        out.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "benchmarks.peers", "--worker", name,
            "--cohort", args.cohort, "--minutes", str(args.minutes),
            "--threads", threads, "--out", str(args.out.resolve()),
        ] + (["--fit-only"] if args.fit_only else [])  # fmt: skip
        print(f"[{datetime.datetime.now():%H:%M:%S}] {name}: training {args.minutes:g} min ...",
              flush=True)  # fmt: skip
        with open(out / LOG, "w") as log:
            try:
                subprocess.run(
                    cmd,
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=60 * args.minutes + EXTRA_SECONDS,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pass
        path = out / "result.json"
        result = json.loads(path.read_text()) if path.exists() else {}
        if not result:
            result = {"model": name, "status": "failed", "error": f"no result; see {out}"}
        results.append(result)
        took = result.get("train_seconds")
        print(
            f"[{datetime.datetime.now():%H:%M:%S}] {name}: {result.get('status')}"
            + (f", trained {took:.0f} s, {result.get('progress', '')}" if took else "")
            + (f" ({result.get('error')})" if result.get("error") else ""),
            flush=True,
        )
    if args.fit_only:
        return 0
    if not args.no_reference:
        results.append(reference_result(args.cohort, args.out / args.cohort / "reference"))
    print()
    print(build_table(results))
    if not args.no_append and not args.fit_only:
        label = f", {args.label}" if args.label else ""
        text = section(results, args.cohort, args.minutes, args.threads, command, started, label)
        append_section(text, args.benchmarks)
        print(f"\nappended to {args.benchmarks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
