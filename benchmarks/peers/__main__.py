"""`python -m benchmarks.peers`: train, sample and score every model on one cohort.

Each model runs in its own worker process (`--worker NAME`, same arguments), so the thread
setting, memory and any crash stay with that model; its output goes to
`runs/peers/<cohort>/<model>/worker.log`.

`--rescore` trains nothing: it scores the saved synthetic cohorts under OUT/COHORT again with
the current `healthgym.evaluate` (every model folder with a synthetic.parquet unless --models
is given), keeps the training facts of each result.json and writes the section as usual.
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

from . import harness
from .harness import (
    COHORTS,
    DEFAULT_MODELS,
    LOG,
    MODELS,
    RESCORED,
    append_section,
    build_table,
    reference_result,
    rescore_model,
    run_model,
    saved_models,
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
        default=None,
        help=f"comma-separated, in order; known: {', '.join(MODELS)}; default "
        f"{','.join(DEFAULT_MODELS)}, with --rescore every saved model of the cohort",
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
    p.add_argument(
        "--rescore",
        action="store_true",
        help="train nothing: score the saved synthetic cohorts under OUT/COHORT again with the "
        "current evaluation (keeps the training facts; --minutes/--threads unused)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.models is None:
        args.models = None if args.rescore else list(DEFAULT_MODELS)
    else:
        args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.rescore and (args.worker or args.fit_only):
        p.error("--rescore goes with neither --worker nor --fit-only")
    unknown = sorted(set(args.models or []) - set(MODELS))
    if unknown and not args.rescore:  # a rescore takes any saved folder
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
    if args.rescore:
        return rescore(args, command, started)
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


def rescore(args: argparse.Namespace, command: str, started: datetime.datetime) -> int:
    """`--rescore`: the saved runs of one cohort scored again; the table printed, the section
    appended unless --no-append."""
    warnings.simplefilter("ignore")
    folder = args.out / args.cohort
    names = args.models if args.models is not None else saved_models(folder)
    if not names:
        print(f"no saved synthetic cohorts under {folder}", file=sys.stderr)
        return 1
    split = harness.load_cohort(args.cohort)  # once for every model (and patchable in tests)
    results = []
    for name in names:
        print(f"[{datetime.datetime.now():%H:%M:%S}] {name}: rescoring ...", flush=True)
        result = rescore_model(name, args.cohort, folder / name, split)
        results.append(result)
        print(
            f"[{datetime.datetime.now():%H:%M:%S}] {name}: {result.get('status')}"
            + (f" ({result.get('error')})" if result.get("error") else ""),
            flush=True,
        )
    if not args.no_reference:
        results.append(reference_result(args.cohort, folder / "reference", split))
    label = f", {args.label}" if args.label else ""
    text = section(results, args.cohort, 0, 0, command, started, label, rescored=True)
    print()
    print(text)
    if not args.no_append:
        append_section(text, args.benchmarks)
        print(f"appended to {args.benchmarks} ({RESCORED})")
    return 0 if all(r.get("status") == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
