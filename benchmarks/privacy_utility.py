"""Privacy-utility of the default model on the demo cohort: epsilon 1, 3, 10 and no DP.

    python -m benchmarks.privacy_utility [--minutes 3] [--epsilons 1,3,10,none] [--no-record]

The demo cohort is split by patient (80% train, 20% holdout, seed 0). Each row trains a
HealthGym for at most ``--minutes`` (the DP rows stop earlier when their planned steps are
spent), samples 1,000 patients (seed 0) and evaluates them against the training split with
the holdout and the outcome `in_hospital_death` (docs/evaluation.md). The DP rows use the
settings that trained best under DP-SGD on this cohort (``DP_SETTINGS``: a smaller network,
no fine token, a larger learning rate and batch); the no-DP row is the default model.
Columns: epsilon asked and spent (delta 0.1 / N), the DP-SGD noise multiplier and steps,
then the report's scores: KS and TV complements, association gap, lag-1 autocorrelation gap,
TSTR AUROC and TSTR/TRTR, membership-inference AUROC and DCR share (0.5 = no leak), and the
training seconds (the whole `fit`, tokenizer included).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import healthgym as hg
from benchmarks.common import header, machine, record, table

SECTION = "## Differential privacy (issue 17): privacy-utility"
#: The DP rows' settings (docs/privacy.md); the no-DP row takes the defaults.
DP_SETTINGS = {"width": 32, "fine": 1, "lr": 0.01, "batch_size": 256, "dp_epochs": 12}


def row(epsilon: float | None, minutes: float, train: Any, holdout: Any) -> dict[str, Any]:
    settings = DP_SETTINGS | {"dp_epsilon": epsilon} if epsilon is not None else {}
    model = hg.HealthGym(**settings)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model.fit(train, tmp, max_minutes=minutes, progress=False)
        seconds = time.perf_counter() - start
    synth = model.sample(1000, seed=0)
    report = hg.evaluate(train, synth, holdout=holdout, outcome="in_hospital_death", seed=0)
    value = report.value
    block = model.privacy or {}
    return {
        "epsilon": "none" if epsilon is None else f"{epsilon:g}",
        "spent": block.get("epsilon_spent", float("nan")),
        "noise": block.get("noise_multiplier", float("nan")),
        "steps": model.result.steps,
        "KS (+)": value("marginals.ks_complement_mean"),
        "TV (+)": value("marginals.tv_complement_mean"),
        "assoc (-)": value("associations.mean_abs_diff"),
        "lag-1 gap (-)": value("temporal.lag1_gap_mean"),
        "TSTR (+)": value("utility.auroc_tstr"),
        "TSTR/TRTR (+)": value("utility.auroc_tstr") / value("utility.auroc_trtr"),
        "MIA (~0.5)": value("privacy.mia_auroc"),
        "DCR share (~0.5)": value("privacy.dcr_share"),
        "train s": round(seconds),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0, help="most training minutes per row")
    p.add_argument("--epsilons", default="1,3,10,none", help="comma-separated; none: no DP")
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    info = machine()
    train, holdout = hg.datasets.demo().split(holdout=0.2, seed=0)
    rows = []
    for e in args.epsilons.split(","):
        rows.append(row(None if e == "none" else float(e), args.minutes, train, holdout))
        print(table(rows[-1:]), flush=True)
    text = (
        header("Privacy-utility, demo cohort", "benchmarks.privacy_utility", argv, info)
        + f"\nDP rows: {DP_SETTINGS}, delta 0.1 / N; no-DP row: the defaults. At most "
        f"{args.minutes:g} training minutes per row; 1,000 synthetic patients (seed 0) vs "
        "3,200 training / 800 holdout patients.\n\n" + table(rows) + "\n"
    )
    print(text)
    if not args.no_record:
        record(text, section=SECTION)


if __name__ == "__main__":
    main()
