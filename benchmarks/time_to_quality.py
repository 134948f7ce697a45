"""Time to quality on the demo cohort: fidelity against training time, faithful vs faster variants.

    python -m benchmarks.time_to_quality [--minutes 1.5] [--every 20] [--variants ...] [--no-record]

The demo cohort is split by patient (80% train, 20% holdout, seed 0). Each variant trains a
HealthGymV1 in slices of ``--every`` seconds (``fit(max_minutes=...)``, then ``resume=True``,
which continues the run exactly) for ``--minutes`` of training. After each slice it samples as
many patients as the holdout (seed 0) and scores them against the holdout with the evaluation
module:

    quality = mean(KS complement mean, TV complement mean, 1 - association mean abs diff)

(1 = these statistics cannot tell the cohorts apart). Time is training time: the sum of the
logged generator-step seconds, so evaluation and per-slice set-up are left out. ``ceiling``
scores a training sample of holdout size against the holdout (real vs real). The winner is the
variant that first reaches the faithful variant's best quality, in the least training time.
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
) -> list[dict[str, Any]]:
    """Train in slices; one row per evaluation."""
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
    return rows


def summarise(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: best quality, and the training time when it first reached faithful's best."""
    target = max(r["quality"] for r in timeline if r["variant"] == "faithful")
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
                "s to faithful best": reach,
                "gen steps": rows[-1]["gen steps"],
            }
        )
    return out


def run(
    variants: list[str],
    minutes: float,
    every: float,
    cohort: hg.Cohort | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """Timeline rows, summary rows and the real-vs-real ceiling (with the holdout size).

    ``extra`` overrides every variant's settings (tests use it to shrink the networks).
    """
    cohort = cohort if cohort is not None else hg.datasets.demo()
    train, holdout = cohort.split(holdout=0.2, seed=0)
    rng = np.random.default_rng(0)
    sample = train.subset(rng.choice(train.ids, len(holdout), replace=False))
    ceiling = {**scores(holdout, sample), "patients": float(len(holdout))}
    timeline = []
    with tempfile.TemporaryDirectory(prefix="hg-ttq-") as tmp:
        for name in variants:
            settings = {**VARIANTS[name], **(extra or {})}
            timeline += train_variant(name, settings, train, holdout, minutes, every, Path(tmp))
    return timeline, summarise(timeline), ceiling


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.time_to_quality", description=__doc__.split("\n")[0]
    )
    p.add_argument("--minutes", type=float, default=1.5, help="training minutes per variant")
    p.add_argument("--every", type=float, default=20.0, help="training seconds between evaluations")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    info = machine()
    timeline, summary, ceiling = run(args.variants.split(","), args.minutes, args.every)
    reached = [r for r in summary if not math.isnan(r["s to faithful best"])]
    winner = min(reached, key=lambda r: r["s to faithful best"])
    text = "\n".join(
        [
            header("Time to quality", "benchmarks.time_to_quality", argv, info),
            f"Demo cohort, 80/20 split; {args.minutes:g} training minutes per variant, evaluated "
            f"every ~{args.every:g} s against the holdout ({ceiling['patients']:.0f} patients). "
            f"Ceiling (train sample vs holdout): quality {ceiling['quality']:.3f}.\n",
            table(summary),
            f"\nFirst to reach the faithful variant's best quality: **{winner['variant']}** "
            f"({winner['s to faithful best']:.0f} s of training).\n",
            table(timeline),
            f"\nLoad average at the end: {load()}.",
        ]
    )
    print(text)
    if not args.no_record:
        record(text)


if __name__ == "__main__":
    main()
