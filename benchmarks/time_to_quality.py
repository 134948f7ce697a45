"""Time to quality on the demo cohort: fidelity against training time, faithful vs faster variants.

    python -m benchmarks.time_to_quality [--minutes 1.5] [--every 20] [--variants ...] [--no-record]
                                         [--faithful-epochs 100] [--faithful-every 600]

The demo cohort is split by patient (80% train, 20% holdout, seed 0). Each variant trains a
HealthGymV1 in slices of ``--every`` seconds (``fit(max_minutes=...)``, then ``resume=True``,
which continues the run exactly) for ``--minutes`` of training. After each slice it samples as
many patients as the holdout (seed 0) and scores them against the holdout with the evaluation
module:

    quality = mean(KS complement mean, TV complement mean, 1 - association mean abs diff)

(1 = these statistics cannot tell the cohorts apart). Time is training time: the sum of the
logged generator-step seconds, so evaluation and per-slice set-up are left out. ``ceiling``
scores a training sample of holdout size against the holdout (real vs real). The target is the
faithful variant's best quality; the winner is the variant that first reaches it, in the least
training time.

``--faithful-epochs N``: the faithful variant instead trains its full N epochs (evaluated every
``--faithful-every`` seconds and at the end), the target is its quality after epoch N, and each
other variant trains until it reaches that target or its ``--minutes`` run out.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import healthgym as hg
from benchmarks.common import header, load, machine, record, table
from healthgym.evaluation.associations import association_metrics
from healthgym.evaluation.marginals import marginal_metrics
from healthgym.training.runtime import resolve_threads

#: Settings over the faithful preset (HealthGymV1 defaults); "faithful" itself is unchanged.
VARIANTS: dict[str, dict[str, Any]] = {
    "faithful": {},
    "critic2": {"critic_iters": 2},
    "batch512": {"batch_size": 512},
    "hidden64": {"hidden": 64, "noise_dim": 64},
    "lean": {"critic_iters": 2, "hidden": 64, "noise_dim": 64},
}


def scores(real: hg.Cohort, synth: hg.Cohort) -> dict[str, float]:
    """The fidelity figures of `evaluate` used here, and their one-number summary."""
    m, a = marginal_metrics(real, synth), association_metrics(real, synth)
    ks, tv, assoc = m["ks_complement_mean"], m["tv_complement_mean"], a["mean_abs_diff"]
    return {
        "KS compl": ks,
        "TV compl": tv,
        "assoc diff": assoc,
        "quality": float(np.mean([ks, tv, 1 - assoc])),
    }


def training_seconds(run_dir: Path) -> float:
    """Sum of the logged generator-step times of a run."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return float(sum(json.loads(line)["seconds"] for line in lines))


def train_variant(
    name: str,
    settings: dict[str, Any],
    train: hg.Cohort,
    holdout: hg.Cohort,
    minutes: float,
    every: float,
    root: Path,
    target: float | None = None,
) -> list[dict[str, Any]]:
    """Train in slices; one row per evaluation. Stops early once quality reaches ``target``."""
    model, run_dir, rows, done = hg.HealthGymV1(**settings), root / name, [], 0.0
    while done < 60 * minutes:
        budget = min(every, 60 * minutes - done)
        model.fit(train, run_dir, resume=bool(rows), max_minutes=budget / 60, progress=False)
        done = training_seconds(run_dir)
        synth = model.sample(len(holdout), seed=0)
        rows.append(
            {
                "variant": name,
                "train s": done,
                "gen steps": model.result.steps,
                "epochs": model.result.epochs,
                **scores(holdout, synth),
            }
        )
        if model.result.stopped_early is None:  # all epochs done
            break
        if target is not None and rows[-1]["quality"] >= target:
            break
    return rows


def summarise(timeline: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Per variant: best quality, and the training time when it first reached ``target``."""
    out = []
    for name in dict.fromkeys(r["variant"] for r in timeline):
        rows = [r for r in timeline if r["variant"] == name]
        best = max(rows, key=lambda r: r["quality"])
        reach = next((r["train s"] for r in rows if r["quality"] >= target), math.nan)
        out.append(
            {
                "variant": name,
                "settings": json.dumps(VARIANTS.get(name, {})),
                "best quality": best["quality"],
                "at train s": best["train s"],
                "s to target": reach,
                "gen steps": rows[-1]["gen steps"],
                "epochs": rows[-1]["epochs"],
            }
        )
    return out


def run(
    variants: list[str],
    minutes: float,
    every: float,
    cohort: hg.Cohort | None = None,
    extra: dict[str, Any] | None = None,
    faithful_epochs: int | None = None,
    faithful_every: float = 600.0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """Timeline rows, summary rows and the real-vs-real ceiling (with the holdout size and the
    target quality).

    ``extra`` overrides every variant's settings (tests use it to shrink the networks). With
    ``faithful_epochs``, "faithful" runs first, for that many epochs, and sets the target.
    """
    cohort = cohort if cohort is not None else hg.datasets.demo()
    train, holdout = cohort.split(holdout=0.2, seed=0)
    rng = np.random.default_rng(0)
    sample = train.subset(rng.choice(train.ids, len(holdout), replace=False))
    ceiling = {**scores(holdout, sample), "patients": float(len(holdout))}
    if faithful_epochs is not None:
        variants = ["faithful"] + [v for v in variants if v != "faithful"]
    timeline, target = [], None
    with tempfile.TemporaryDirectory(prefix="hg-ttq-") as tmp:
        for name in variants:
            settings = {**VARIANTS[name], **(extra or {})}
            if name == "faithful" and faithful_epochs is not None:
                settings["epochs"] = faithful_epochs
                rows = train_variant(
                    name, settings, train, holdout, math.inf, faithful_every, Path(tmp)
                )
                target = rows[-1]["quality"]
            else:
                rows = train_variant(
                    name, settings, train, holdout, minutes, every, Path(tmp), target
                )
            timeline += rows
    if target is None:
        target = max(r["quality"] for r in timeline if r["variant"] == "faithful")
    ceiling["target"] = target
    return timeline, summarise(timeline, target), ceiling


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.time_to_quality", description=__doc__.split("\n")[0]
    )
    p.add_argument("--minutes", type=float, default=1.5, help="training minutes per variant")
    p.add_argument("--every", type=float, default=20.0, help="training seconds between evaluations")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    p.add_argument(
        "--faithful-epochs",
        type=int,
        help="train faithful for this many epochs first; its final quality is the target",
    )
    p.add_argument(
        "--faithful-every",
        type=float,
        default=600.0,
        help="with --faithful-epochs: training seconds between faithful's evaluations",
    )
    args = p.parse_args(argv)
    info, threads = machine(), resolve_threads()
    timeline, summary, ceiling = run(
        args.variants.split(","),
        args.minutes,
        args.every,
        faithful_epochs=args.faithful_epochs,
        faithful_every=args.faithful_every,
    )
    reached = [
        r for r in summary if not math.isnan(r["s to target"]) and r["variant"] != "faithful"
    ]
    if args.faithful_epochs is None:
        reached += [r for r in summary if r["variant"] == "faithful"]
        what = "the faithful variant's best quality"
        plan = f"{args.minutes:g} training minutes per variant"
    else:
        what = f"the faithful variant's quality after {args.faithful_epochs} epochs"
        plan = (
            f"faithful for {args.faithful_epochs} epochs (evaluated every "
            f"~{args.faithful_every:g} s), the others until they reach its final quality or "
            f"{args.minutes:g} training minutes"
        )
    if reached:
        winner = min(reached, key=lambda r: r["s to target"])
        verdict = (
            f"First to reach {what} ({ceiling['target']:.3f}): **{winner['variant']}** "
            f"({winner['s to target']:.0f} s of training)."
        )
    else:
        verdict = f"No faster variant reached {what} ({ceiling['target']:.3f})."
    text = "\n".join(
        [
            header("Time to quality", "benchmarks.time_to_quality", argv, info),
            f"Demo cohort, 80/20 split; {plan}, evaluated every ~{args.every:g} s against the "
            f"holdout ({ceiling['patients']:.0f} patients); {threads} torch thread(s) (the "
            f"library's setting). Ceiling (train sample vs holdout): quality "
            f"{ceiling['quality']:.3f}.\n",
            table(summary),
            f"\n{verdict}\n",
            table(timeline),
            f"\nLoad average at the end: {load()}.",
        ]
    )
    print(text)
    if not args.no_record:
        record(text)


if __name__ == "__main__":
    main()
