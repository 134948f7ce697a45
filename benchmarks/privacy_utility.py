"""Privacy-utility of the default model: epsilon 1, 3, 10 and no DP, beside MOSTLY AI's engine.

    python -m benchmarks.privacy_utility [--cohort demo|visits] [--minutes 3]
        [--epsilons 1,3,10,none] [--peer | --peer-only] [--threads N] [--no-record]

The cohort (the demo, or the small visit cohort) is split by patient (80% train, 20%
holdout, seed 0). Each row trains a HealthGym for at most ``--minutes`` (the DP rows stop
earlier when their planned steps are spent), samples 1,000 patients (seed 0) and evaluates
them against the training split with the holdout and the outcome `in_hospital_death`
(docs/evaluation.md). ``--peer`` adds MOSTLY AI's TabularARGN at the same epsilons and
budget (`benchmarks/peers/tabularargn.py`: how it splits epsilon; run it in the peers'
environment, docs/benchmarks.md). The DP rows use the
settings that trained best under DP-SGD on this cohort (``DP_SETTINGS``: a smaller network,
no fine token, a larger learning rate and batch); the no-DP row is the default model.
Columns: epsilon asked and spent (delta 0.1 / N), the DP-SGD noise multiplier and steps,
then the report's scores: KS and TV complements, association gap, lag-1 autocorrelation gap,
TSTR AUROC and TSTR/TRTR, membership-inference AUROC and DCR share (0.5 = no leak), and the
training seconds (the whole `fit`, tokenizer included).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from typing import Any

import healthgym as hg
from benchmarks.common import header, machine, record, table

SECTION = "## Differential privacy (issue 17): privacy-utility"
#: The DP rows' settings (docs/privacy.md); the no-DP row takes the defaults.
DP_SETTINGS = {"width": 32, "fine": 1, "lr": 0.01, "batch_size": 256, "dp_epochs": 12}


def row(
    model_name: str, epsilon: float | None, minutes: float, train: Any, holdout: Any
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if model_name == "healthgym":
            settings = DP_SETTINGS | {"dp_epsilon": epsilon} if epsilon is not None else {}
            model = hg.HealthGym(**settings)
            model.fit(train, tmp, max_minutes=minutes, progress=False)
            seconds = time.perf_counter() - start
            synth = model.sample(1000, seed=0)
            block = model.privacy or {}
            spent, noise = block.get("epsilon_spent"), block.get("noise_multiplier")
            steps = model.result.steps
        else:
            from benchmarks.peers.tabularargn import TabularARGNAdapter

            peer = TabularARGNAdapter(tmp, seed=0, dp_epsilon=epsilon).fit(train, minutes)
            seconds = time.perf_counter() - start
            synth = peer.sample(1000)
            spent = peer.epsilon_spent() if epsilon is not None else None
            noise = peer.dp_config(len(train)).noise_multiplier if epsilon is not None else None
            steps = "+".join(re.findall(r"(\d+) steps", peer.progress))  # flat+sequential
    report = hg.evaluate(train, synth, holdout=holdout, outcome="in_hospital_death", seed=0)
    value = report.value
    return {
        "model": model_name,
        "epsilon": "none" if epsilon is None else f"{epsilon:g}",
        "spent": float("nan") if spent is None else spent,
        "noise": float("nan") if noise is None else noise,
        "steps": steps,
        "KS (+)": value("marginals.ks_complement_mean"),
        "TV (+)": value("marginals.tv_complement_mean"),
        "assoc (-)": value("associations.mean_abs_diff"),
        "lag-1 gap (-)": value("temporal.lag1_gap_mean"),
        "within lag-1 gap (-)": value("temporal.within_lag1_gap_mean"),
        "TSTR (+)": value("utility.auroc_tstr"),
        "TSTR/TRTR (+)": value("utility.auroc_tstr") / value("utility.auroc_trtr"),
        "MIA (~0.5)": value("privacy.mia_auroc"),
        "DCR share (~0.5)": value("privacy.dcr_share"),
        "train s": round(seconds),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cohort", choices=["demo", "visits"], default="demo")
    p.add_argument("--minutes", type=float, default=3.0, help="most training minutes per row")
    p.add_argument("--epsilons", default="1,3,10,none", help="comma-separated; none: no DP")
    p.add_argument("--peer", action="store_true", help="add MOSTLY AI's TabularARGN rows")
    p.add_argument("--peer-only", action="store_true", help="only the TabularARGN rows")
    p.add_argument("--threads", type=int, default=None, help="torch threads for every model")
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.threads:  # the peer reads torch's setting, healthgym its own
        import torch

        torch.set_num_threads(args.threads)
        os.environ["HEALTHGYM_THREADS"] = str(args.threads)
    info = machine()
    cohort = hg.datasets.demo() if args.cohort == "demo" else hg.datasets.visits()
    train, holdout = cohort.split(holdout=0.2, seed=0)
    rows = []
    for name in ["healthgym"] * (not args.peer_only) + ["tabularargn"] * (
        args.peer or args.peer_only
    ):
        for e in args.epsilons.split(","):
            rows.append(row(name, None if e == "none" else float(e), args.minutes, train, holdout))
            print(table(rows[-1:]), flush=True)
    text = (
        header(f"Privacy-utility, {args.cohort} cohort", "benchmarks.privacy_utility", argv, info)
        + f"\nhealthgym DP rows: {DP_SETTINGS}, delta 0.1 / N; no-DP rows: the defaults. "
        f"At most {args.minutes:g} training minutes per row; 1,000 synthetic patients (seed 0) "
        f"vs {len(train)} training / {len(holdout)} holdout patients. `spent`: the accountant's "
        "epsilon (tabularargn: its analyses' share plus the largest DP-SGD epsilon its "
        "progress log shows, both models).\n\n" + table(rows) + "\n"
    )
    print(text)
    if not args.no_record:
        record(text, section=SECTION)


if __name__ == "__main__":
    main()
