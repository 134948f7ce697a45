"""The default model's trajectories before and after issue 15 on the development cohorts (the
demo, its variable-length variant and the visit cohort), at equal budget, every column of the
evaluation report that the issue's targets name.

    python -m benchmarks.trajectories [--minutes 3] [--seeds 0 1 2] [--cohorts ...]
                                      [--models before default] [--no-record]

Each cohort is split 80/20 by patient (seed 0). Each model trains on the 80% for at most
`--minutes` (epochs unbounded: early stopping or the clock ends it, the peers' set-up),
samples as many patients as it trained on, and is scored by `healthgym.evaluate` against the
20% holdout with the outcome `in_hospital_death`. "before" is `HealthGym(last_value=False,
average=0, dropout=0.2)`: today's code with the issue's model changes off, which is the
network, start, training and decoding that run folders of release 0.1.0 load with
(tests/models/test_run_folders.py samples them exactly; tests/models/healthgym/test_sampler.py
checks its sampler against the pre-issue one). "kernel" is `HealthGym(levels=False,
dropout=0.2)`, the default of 2026-11-30 15:06 (the kernel and the weight average of issue 15,
without the levels); "levels" is `HealthGym(levels=True, dropout=0.2)`, the demo's default.
"default" is `HealthGym()`: levels, with dropout 0.5 on cohorts under `SMALL_BELOW` patients
(the small ones), 0.2 above. The holdout's own trajectory gaps (what unseen real patients
reach) are the reference the `excess` columns subtract.

`--quick` runs a tiny model on 60 visit patients for a few seconds (a test runs it).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from benchmarks.common import header, machine, publish, table

SECTION = "## Trajectories (issue 15)"
COHORTS = ("demo", "variable_length", "visits")
OUTCOME = "in_hospital_death"
#: "kernel": the default of 2026-11-30 15:06 (kernel and average, no levels); "levels": with
#: them, dropout 0.2 whatever the cohort's size; "default": dropout by size (`SMALL_BELOW`)
MODELS = {
    "before": {"last_value": False, "average": 0.0, "dropout": 0.2},
    "kernel": {"levels": False, "dropout": 0.2},
    "levels": {"levels": True, "dropout": 0.2},
    "default": {},
}
#: (column, summary key); the metric definitions: docs/evaluation.md
COLUMNS = [
    ("KS compl. (+)", "marginals.ks_complement_mean"),
    ("TV compl. (+)", "marginals.tv_complement_mean"),
    ("missing diff (-)", "marginals.missing_rate_diff_mean"),
    ("assoc. diff (-)", "associations.mean_abs_diff"),
    ("lag-1 gap (-)", "temporal.lag1_gap_mean"),
    ("within lag-1 gap (-)", "temporal.within_lag1_gap_mean"),
    ("delta KS (-)", "temporal.delta_ks_mean"),
    ("lag-1 excess (<= 0.02)", "temporal.lag1_gap_excess"),
    ("within excess (<= 0.02)", "temporal.within_lag1_gap_excess"),
    ("TSTR AUROC (+)", "utility.auroc_tstr"),
    ("TRTR AUROC", "utility.auroc_trtr"),
    ("TSTR/TRTR, chance-corr. (+)", "utility.auroc_ratio"),
    ("DCR share (0.4-0.6)", "privacy.dcr_share"),
    ("MIA AUROC (<= 0.55)", "privacy.mia_auroc"),
]


def load(name: str, patients: int | None = None) -> tuple[Any, Any]:
    """(train, holdout) of a development cohort (its first `patients`, if given)."""
    import healthgym as hg

    cohort = hg.datasets.development()[name]
    if patients is not None:
        cohort = cohort.subset(cohort.ids[:patients])
    return cohort.split(holdout=0.2, seed=0)


def run_one(
    train: Any, holdout: Any, settings: dict[str, Any], minutes: float, seed: int
) -> dict[str, Any]:
    """Fit, sample, evaluate: the row's figures."""
    import healthgym as hg

    t0 = time.perf_counter()
    model = hg.HealthGym(epochs=10**6, seed=seed, **settings)
    model.fit(train, max_minutes=minutes, progress=False)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    synth = model.sample(len(train), seed=seed)
    sample_s = time.perf_counter() - t0
    report = hg.evaluate(train, synth, holdout=holdout, outcome=OUTCOME)
    row: dict[str, Any] = {
        "train s": round(fit_s),
        "epochs": model.result.epochs,
        "sample s": sample_s,
    }
    row |= {col: float(report.value(key)) for col, key in COLUMNS}
    reference = report.metrics["temporal"]["reference"]
    row["_reference"] = (reference["lag1_gap_mean"], reference["within_lag1_gap_mean"])
    return row


def mean_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Every column's mean over the seeds' rows (seconds and epochs rounded)."""
    out = {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}
    return out | {"train s": round(out["train s"]), "epochs": round(out["epochs"]),
                  "sample s": f"{out['sample s']:.1f}"}  # fmt: skip


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="model and sampling seeds")
    p.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=COHORTS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--quick", action="store_true", help="a tiny, fast run (tests)")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    from healthgym.training.runtime import cpu_threads

    with cpu_threads(args.threads):
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> str:
    """Every cohort and model at ``args``' budget; the section's text."""
    tiny: dict[str, Any] = {}
    patients = None
    if args.quick:
        args.minutes, args.cohorts, patients = 0.03, ["visits"], 60
        tiny = {"width": 8, "bins": 8, "fine": 4}
    info = machine()
    means, detail, notes = [], [], []
    for name in args.cohorts:
        train, holdout = load(name, patients)
        for model in args.models:
            settings = MODELS[model]
            rows = []
            for seed in args.seeds:
                row = run_one(train, holdout, {**tiny, **settings}, args.minutes, seed)
                reference = row.pop("_reference")
                rows.append(row)
                detail.append({"cohort": name, "model": model, "seed": seed, **row})
                print(table(detail[-1:]), flush=True)
            means.append({"cohort": name, "model": model, **mean_row(rows)})
        notes.append(
            f"- {name}: {len(train)} training / {len(holdout)} holdout patients; the holdout's "
            f"own gaps to the training patients: lag-1 {reference[0]:.3f}, within-patient "
            f"lag-1 {reference[1]:.3f}"
        )
    seeds = ", ".join(map(str, args.seeds))
    text = "\n".join(
        [
            header(
                "The default model before and after issue 15, development cohorts",
                "benchmarks.trajectories",
                argv,
                info,
            ),
            *notes,
            f"- budget {args.minutes:g} minutes per model, {args.threads} threads; "
            f"model and sampling seed(s) {seeds}; figures are means over the seeds",
            "",
            table(means, floats="{:.3f}"),
        ]
    )
    if len(args.seeds) > 1:
        text += "\n\nPer seed:\n\n" + table(detail, floats="{:.3f}")
    return publish(text, args.no_record, SECTION)


if __name__ == "__main__":
    main()
