"""Off-policy evaluation against a known truth (issue 28): the known MDP's stays recorded
under its confounded behaviour policy, seven policies' values estimated from them (WIS,
WPDIS, FQE, weighted DR, each with a percentile-bootstrap 95% interval) beside their exact
values (dynamic programming).

    python -m benchmarks.ope_known_mdp [--stays 2000] [--gamma 1] [--bootstrap 30] [--no-record]

Per policy: the truth, each estimate and whether its interval covers the truth; per
estimator: mean absolute error, Spearman rank correlation with the truth over the policies,
and coverage (the issue's target: intervals cover the truth for >= 80% of policies).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr

from benchmarks.common import header, machine, publish, table

SECTION = "## A simulator whose answers to treatment are right (issue 28)"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stays", type=int, default=2000)
    p.add_argument("--gamma", type=float, default=1.0, help="confounding strength")
    p.add_argument("--bootstrap", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    from healthgym.datasets import known_mdp as mdp
    from healthgym.rl import ope

    info = machine()
    started = time.perf_counter()
    cohort = mdp.known_mdp_cohort(args.stays, gamma=args.gamma, seed=args.seed)
    d = ope.decisions(cohort, "Treat", terminal=mdp.survival(cohort))
    rows, truths, found = [], [], {k: [] for k in ope.ESTIMATORS}
    for name, policy in mdp.policies(args.gamma).items():
        truth = mdp.value(policy)
        est = ope.evaluate_policy(d, mdp.severity_policy(policy), bootstrap=args.bootstrap,
                                  seed=args.seed)  # fmt: skip
        row: dict = {"policy": name, "truth": truth}
        for k, e in est.items():
            covered = e["low"] <= truth <= e["high"]
            row[k] = f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]{'' if covered else ' x'}"
            found[k].append((e["value"], covered))
        truths.append(truth)
        rows.append(row)
        print(row, flush=True)
    summary = []
    for k, values in found.items():
        v = np.array([x for x, _ in values])
        summary.append(
            {
                "estimator": k,
                "mean |error|": float(np.mean(np.abs(v - truths))),
                "Spearman": float(spearmanr(v, truths).statistic),
                "coverage": float(np.mean([c for _, c in values])),
            }
        )
    text = (
        header("Off-policy evaluation on the known MDP", "benchmarks.ope_known_mdp", argv, info)
        + f"\n{args.stays} stays under the behaviour policy (gamma {args.gamma}), "
        f"{args.bootstrap} bootstrap resamples; {time.perf_counter() - started:.0f} s. "
        "Estimates with [95% interval]; x: the interval misses the truth.\n\n"
        + table(rows)
        + "\n\n"
        + table(summary)
        + "\n"
    )
    return publish(text, args.no_record, SECTION)


if __name__ == "__main__":
    main()
