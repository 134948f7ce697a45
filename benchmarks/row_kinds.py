"""Rows of different kinds (issue 33): the default model, trained for a wall-time budget on
cohorts whose rows are of kinds that never mix, sampled as many patients as it trained on,
read by the report's row-kind section against the real holdout.

    python -m benchmarks.row_kinds [--minutes 8] [--cohorts pk,outcome,demo] [--preset NAME]
        [--seeds 0 1 2] [--set KEY=VALUE ...] [--no-record]

Cohorts: `pk` (oral dosing records of the one-compartment PK model, `datasets.pk_oral`,
1,000 patients, dose and sample rows), `outcome` (ICU stays of the known MDP ending in one
outcome row, `datasets.known_mdp`, 4,000 stays), `demo` (the bundled ICU cohort). Each is
split 80/20 by patient; the schema is inferred from the training part (its `rows` block
included). Per cohort: epochs reached and the last validation loss, then the issue's
targets: rows of a pattern never in the real table (<= 1%), exclusive items together
(<= 0.1%), last-only (first-only) kinds misplaced (<= 1%), the outcome rate against the real
one (within 0.02; stays ending with `died` = 1, where the cohort has it), and per-kind against
pooled marginals (the gap minus the holdout's, <= 0.02). With several `--seeds`, one row per
cohort and model seed; `--set average=0` changes a setting of the default model.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.common import header, machine, publish, table

SECTION = "## Rows of different kinds (issue 33)"


def cohorts(names: list[str]) -> dict:
    import healthgym as hg
    from healthgym.datasets.known_mdp import known_mdp_cohort
    from healthgym.datasets.pk_oral import pk_oral

    make = {
        "pk": lambda: pk_oral(1000, seed=0).table,
        "outcome": lambda: known_mdp_cohort(4000, seed=0).table,
        "demo": lambda: hg.datasets.demo().table,
    }
    ids = {"pk": ("pid", "step"), "outcome": ("stay", "step"), "demo": ("RecordID", "step")}
    out = {}
    for name in names:
        cohort = hg.Cohort(make[name](), id=ids[name][0], time=ids[name][1])
        out[name] = cohort.split(holdout=0.2, seed=0)
    return out


def died_rate(cohort) -> float:
    if "died" not in cohort.schema.names:
        return float("nan")
    return float(cohort.table.groupby(cohort.schema.id)["died"].max().astype(float).mean())


def run_one(name: str, train, holdout, args: argparse.Namespace, seed: int) -> dict:
    """Train on `train` within the budget, sample as many patients, read the row kinds."""
    import healthgym as hg
    from healthgym.evaluation.row_kinds import row_kind_metrics

    run = Path(tempfile.mkdtemp(prefix=f"hg-rowkinds-{name}-")) / "run"
    began = time.monotonic()
    settings = {k: json.loads(v) for k, _, v in (kv.partition("=") for kv in args.set)}
    model = hg.HealthGym.from_options(preset=args.preset, seed=seed, **settings)
    model.fit(train, run, max_minutes=args.minutes, progress=False, budget_began=began)
    seconds = time.monotonic() - began
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_nll"] for r in log if "val_nll" in r]
    synth = model.sample(len(train.lengths), seed=1 + seed)
    m = row_kind_metrics(train, synth, holdout)
    return {
        "cohort": name,
        "seed": seed,
        "end": model.config.end,
        "train rows": len(train.table),
        "fit s": seconds,
        "epochs": max((r.get("epoch", 0) for r in log), default=0),
        "last val loss": val[-1] if val else float("nan"),
        "unseen patterns": m["unseen_pattern_share"],
        "holdout unseen": m.get("holdout_unseen_pattern_share", float("nan")),
        "exclusive together": m["never_together_share"],
        "terminal misplaced": m["terminal_misplaced_share"],
        "died real": died_rate(train),
        "died synthetic": died_rate(synth),
        "per-kind gap excess": m.get("per_kind_ks_gap_excess", float("nan")),
    }


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--cohorts", default="pk,outcome,demo")
    p.add_argument("--preset", help="the default model's preset (e.g. simulator)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="model seeds")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="model settings")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    info = machine()
    rows = []
    for name, (train, holdout) in cohorts(args.cohorts.split(",")).items():
        for seed in args.seeds:
            rows.append(run_one(name, train, holdout, args, seed))
            print(rows[-1], flush=True)
    text = (
        header("Row kinds kept by the default model", "benchmarks.row_kinds", argv, info)
        + f"\nbudget {args.minutes:g} min per cohort (wall, set-up included)\n\n"
        + table(rows)
        + "\n"
    )
    return publish(text, args.no_record, SECTION)


if __name__ == "__main__":
    main()
