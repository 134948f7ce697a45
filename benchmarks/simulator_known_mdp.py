"""The simulator's policy values against a known truth (issue 28): the default model with
stays that end where its steps draw them (`--preset simulator`, `end="drawn"`) trained on
the known MDP's stays recorded under its confounded behaviour policy, then seven policies
run in it, their survival beside the exact values (dynamic programming), beside off-policy
estimates (FQE, weighted DR) from the same recorded stays, and beside a treatment-blind
simulator (the same model trained with each stay's treatments shuffled among the decision
rows: the treatment carries no information, so every policy gets the same value).

    python -m benchmarks.simulator_known_mdp [--stays 8000] [--minutes 6] [--simulated 4000]
        [--gamma 1] [--no-ope] [--no-baseline] [--no-record]

Per policy: the truth, the simulator's value (the share of `--simulated` stays not ending in
death; its binomial standard error beside), the baseline's and the OPE estimates; per
estimate: mean absolute error and Spearman rank correlation with the truth over the
policies (the issue's targets for the simulator: within 0.02 on average, Spearman >= 0.9).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from benchmarks.common import header, machine, publish, table, treatments_shuffled

SECTION = "## A simulator whose answers to treatment are right (issue 28)"


def recorded(stays: int, gamma: float, seed: int):
    """The known MDP's recorded stays with the rows block they show."""
    import healthgym as hg
    from healthgym.data.row_rules import infer_rules
    from healthgym.datasets import known_mdp as mdp

    c = mdp.known_mdp_cohort(stays, gamma=gamma, seed=seed)
    return hg.Cohort(c.table, replace(c.schema, rows=infer_rules(c.table, c.schema)))


def simulated_survival(sim, policy: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """(share of n simulated stays not ending in death, mean rows per stay) under `policy` p[t, s]
    (the simulator's `Severity` is the state the policy reads)."""
    import torch

    from healthgym.datasets import known_mdp as mdp

    rng, np_rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    sim.begin(n, rng, np_rng, None)
    running, died, steps = np.ones(n, bool), np.zeros(n, bool), np.ones(n)
    while running.any():
        level = sim.state()["Severity"]
        severity = np.array([0 if x is None or x != x else int(x) for x in level])
        p = policy[np.minimum(sim.t, mdp.HORIZON - 1), severity]
        _, _, term, trunc = sim.advance((np_rng.random(n) < p).astype(int)[:, None], rng, np_rng)
        died |= (term | trunc) & running & (sim.raw["died"] == 1)
        steps += running  # rows of the stay, its last (an outcome row) included
        running &= ~(term | trunc)
    return 1.0 - died.mean(), steps.mean()


def train(cohort, folder: Path, minutes: float):
    import healthgym as hg

    model = hg.HealthGym.from_options(preset="simulator")
    model.fit(cohort, folder, max_minutes=minutes, progress=False)
    return model


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stays", type=int, default=8000)
    p.add_argument("--minutes", type=float, default=6.0, help="training budget per model")
    p.add_argument("--simulated", type=int, default=4000, help="simulated stays per policy")
    p.add_argument("--gamma", type=float, default=1.0, help="confounding strength")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ope", action="store_true", help="leave out FQE and DR")
    p.add_argument("--no-baseline", action="store_true", help="leave out the treatment-blind")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    from healthgym.datasets import known_mdp as mdp
    from healthgym.rl import ope
    from healthgym.rl.simulator import Simulator

    info = machine()
    started = time.perf_counter()
    cohort = recorded(args.stays, args.gamma, args.seed)
    runs = {"simulator": cohort}
    if not args.no_baseline:
        runs["treatment-blind"] = treatments_shuffled(cohort, args.seed)
    sims, fits = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in runs.items():
            t0 = time.perf_counter()
            model = train(data, Path(tmp) / name, args.minutes)
            r = model.result
            fits.append({"model": name, "epochs": r.epochs, "best val NLL": r.best_val,
                         "train s": time.perf_counter() - t0})  # fmt: skip
            sims[name] = Simulator(model)
    d = None
    if not args.no_ope:
        d = ope.decisions(cohort, "Treat", terminal=mdp.survival(cohort))
    rows, truths = [], []
    found: dict[str, list[float]] = {k: [] for k in [*sims, *([] if d is None else ("fqe", "dr"))]}
    for name, policy in mdp.policies(args.gamma).items():
        truth = mdp.value(policy)
        row: dict = {"policy": name, "truth": truth}
        for k, sim in sims.items():
            v, steps = simulated_survival(sim, policy, args.simulated, seed=args.seed + 1)
            se = np.sqrt(v * (1 - v) / args.simulated)
            row[k] = f"{v:.3f} ({se:.3f})"
            found[k].append(v)
            if k == "simulator":
                row["steps"] = steps
        if d is not None:
            est = ope.estimate(d, mdp.severity_policy(policy), which=("fqe", "dr"))
            for k in ("fqe", "dr"):
                row[k] = est[k]
                found[k].append(est[k])
        truths.append(truth)
        rows.append(row)
        print(row, flush=True)
    summary = [
        {
            "estimate": k,
            "mean |error|": float(np.mean(np.abs(np.array(v) - truths))),
            "Spearman": float(spearmanr(v, truths).statistic) if np.ptp(v) > 0 else float("nan"),
        }
        for k, v in found.items()
    ]
    real_steps = cohort.table.groupby(cohort.schema.id).size().mean()
    text = (
        header(
            "The simulator's policy values on the known MDP",
            "benchmarks.simulator_known_mdp",
            argv,
            info,
        )  # fmt: skip
        + f"\n{args.stays} stays recorded under the behaviour policy (gamma {args.gamma}); "
        f"the default model with `--preset simulator`, {args.minutes:g} min budget each; "
        f"{args.simulated} simulated stays per policy (standard error in brackets); rows per "
        f"recorded stay {real_steps:.2f} (`steps`: the simulator's under each policy); "
        f"{time.perf_counter() - started:.0f} s in all.\n\n"
        + table(fits)
        + "\n\n"
        + table(rows)
        + "\n\n"
        + table(summary)
        + "\n"
    )
    return publish(text, args.no_record, SECTION)


if __name__ == "__main__":
    main()
