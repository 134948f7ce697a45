"""Counterfactual tumour volumes (issue 28): the default model with `--preset simulator`
trained on patients of the tumour growth model (`datasets.tumour_growth`, Geng et al. 2017)
treated by a recorded care of confounding strength gamma, then asked, from held-out
patients' real histories, what their tumours do over the next tau = 1..5 days under
treatment sequences other than the recorded ones; against the truth from the model's
equations and each patient's own parameters.

    python -m benchmarks.tumour_growth [--gammas 0,2,4] [--patients 2000] [--minutes 3]
        [--test 300] [--draws 20] [--no-baseline] [--set KEY=VALUE ...] [--no-record]

Protocol: held-out patients resumed at days 10, 25 and 40 (those still in the stay 5 days
later), each treated from then on by one of four sequences (none, chemo every day, radio
every day, both every day) for 5 days; the model's prediction is the mean of `--draws`
simulated paths (`Simulator.resume`, then `advance`), the truth the mean over 200 noise
paths of the equations. Normalised RMSE = RMSE / the fatal volume (1150 cm^3), in percent, as
the papers report it. Beside it: a treatment-blind simulator (the same model trained on the
same patients with their treatments shuffled among the treated rows) and the last recorded
volume carried forward.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import header, machine, publish, table, treatments_shuffled

SECTION = "## A simulator whose answers to treatment are right (issue 28)"
CUTS = (10, 25, 40)
TAU = 5
SEQUENCES = {"none": (0, 0), "chemo": (1, 0), "radio": (0, 1), "both": (1, 1)}


def predicted(sim, test, cut: int, ids: np.ndarray, treat: tuple[int, int], draws: int):
    """(n, TAU) mean simulated volumes of patients `ids` resumed at day `cut`, treated by
    `treat` (chemo, radio) every day; a stay that ends keeps its last volume."""
    import torch

    import healthgym as hg

    rows = test.table[test.table["patient"].isin(ids) & (test.table["day"] <= cut)]
    copies = []
    for m in range(draws):  # every patient `draws` times, to average its simulated paths
        c = rows.copy()
        c["patient"] = c["patient"] * draws + m
        copies.append(c)
    many = pd.concat(copies).sort_values(["patient", "day"], kind="stable", ignore_index=True)
    rng, trng = np.random.default_rng(0), torch.Generator().manual_seed(0)
    sim.resume(hg.Cohort(many, test.schema), cut, rng)
    n = len(many["patient"].unique())
    out = np.zeros((n, TAU))
    running = np.ones(n, bool)
    last = np.asarray(sim.raw["volume"], dtype=float)
    action = np.tile(np.asarray(treat), (n, 1))
    for k in range(TAU):
        _, _, term, trunc = sim.advance(action, trng, rng)
        now = np.asarray(sim.raw["volume"], dtype=float)
        last = np.where(running & np.isfinite(now), now, last)
        out[:, k] = last
        running &= ~(term | trunc)
    return out.reshape(len(ids), draws, TAU).mean(axis=1)  # rows: patient * draws + m, sorted


def evaluate(sims: dict, test, params: pd.DataFrame, draws: int) -> dict[str, np.ndarray]:
    """Per predictor: the squared errors (cases, TAU) over the cuts and sequences."""
    from healthgym.datasets import tumour_growth as tg

    lengths = test.table.groupby("patient").size()
    errors: dict[str, list[np.ndarray]] = {k: [] for k in [*sims, "last value"]}
    for cut in CUTS:
        ids = np.sort(lengths.index[lengths > cut + TAU].to_numpy())
        now = (
            test.table.set_index(["patient", "day"])["volume"]
            .loc[list(zip(ids, [cut] * len(ids), strict=True))]
            .to_numpy()
        )
        for treat in SEQUENCES.values():
            sequence = np.broadcast_to(np.asarray(treat, float), (len(ids), TAU, 2))
            truth = tg.counterfactual(params.loc[ids], cut, now, sequence, seed=cut)
            for name, sim in sims.items():
                guess = predicted(sim, test, cut, ids, treat, draws)
                errors[name].append((guess - truth) ** 2)
            errors["last value"].append((now[:, None] - truth) ** 2)
    return {k: np.concatenate(v) for k, v in errors.items()}


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gammas", default="0,2,4")
    p.add_argument("--patients", type=int, default=2000, help="training patients")
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per model")
    p.add_argument("--test", type=int, default=300, help="held-out patients")
    p.add_argument("--draws", type=int, default=20, help="simulated paths per prediction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baseline", action="store_true", help="leave out the treatment-blind")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="model settings")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    settings = {k: json.loads(v) for k, _, v in (kv.partition("=") for kv in args.set)}
    import healthgym as hg
    from healthgym.datasets import tumour_growth as tg
    from healthgym.rl.simulator import Simulator

    info = machine()
    started = time.perf_counter()
    rows, fits = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for gamma in [float(g) for g in args.gammas.split(",")]:
            train, _ = tg.simulate(args.patients, gamma, seed=args.seed)
            test, params = tg.simulate(args.test, gamma, seed=args.seed + 1000)
            data = {"simulator": train}
            if not args.no_baseline:
                data["treatment-blind"] = treatments_shuffled(train, args.seed)
            sims = {}
            for name, cohort in data.items():
                model = hg.HealthGym.from_options(preset="simulator", **settings)
                t0 = time.perf_counter()
                model.fit(cohort, Path(tmp) / f"{name}-{gamma}", max_minutes=args.minutes,
                          progress=False)  # fmt: skip
                fits.append({"gamma": gamma, "model": name, "epochs": model.result.epochs,
                             "train s": time.perf_counter() - t0})  # fmt: skip
                sims[name] = Simulator(model, actions=["chemo", "radio"])
            errors = evaluate(sims, test, params, args.draws)
            for name, sq in errors.items():
                nrmse = np.sqrt(sq.mean(axis=0)) / tg.V_MAX * 100
                row = {"gamma": gamma, "predictor": name, "cases": len(sq)}
                row |= {f"tau={k + 1}": float(x) for k, x in enumerate(nrmse)}
                rows.append(row)
                print(row, flush=True)
    text = (
        header(
            "Counterfactual tumour volumes (tumour growth model)",
            "benchmarks.tumour_growth",
            argv,
            info,
        )  # fmt: skip
        + f"\n{args.patients} training and {args.test} held-out patients per gamma; the "
        f"default model with `--preset simulator`, {args.minutes:g} min budget each; resumed at "
        f"days {', '.join(map(str, CUTS))}, treated by each of {', '.join(SEQUENCES)} for "
        f"{TAU} days; {args.draws} simulated paths per prediction. Normalised RMSE (% of the "
        f"fatal volume) per tau; {time.perf_counter() - started:.0f} s in all.\n\n"
        + table(fits)
        + "\n\n"
        + table(rows)
        + "\n"
    )
    return publish(text, args.no_record, SECTION)


if __name__ == "__main__":
    main()
