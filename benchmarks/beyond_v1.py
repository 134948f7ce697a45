"""HealthGymV1 (faithful) vs HealthGymGAN (beyond v1) on the demo cohort, same wall-clock budget.

    python -m benchmarks.beyond_v1 [--minutes 5] [--length-minutes M/2] [--out DIR]

Both models train on the same patient split of the bundled demo cohort for `--minutes` each,
sample as many patients as the training split holds, and are scored by `healthgym.evaluate`
against it (holdout for privacy and utility, outcome `in_hospital_death`). A "real holdout"
column scores the holdout itself, the best a generator can do at this sample size. Lengths
are scored on a variable-length variant (each stay cut at a random end,
`healthgym.datasets.variable_length.cut_stays`), trained for `--length-minutes` per model.
The table is printed and appended to BENCHMARKS.md with date, commit, CPU and torch version.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import healthgym as hg
from healthgym.datasets.variable_length import cut_stays
from healthgym.evaluation import READINGS
from healthgym.evaluation.temporal import temporal_metrics

OUTCOME = "in_hospital_death"
BENCHMARKS_FILE = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\nMeasured results, newest last; each section says how it was produced "
    "(command, commit, CPU, torch).\n"
)
LENGTH_ROW = "temporal: length KS complement, variable-length variant"
#: Rows beyond the evaluation summary: (label, metric path in Report.metrics).
EXTRA_ROWS = (
    ("marginals: missing-rate difference per step, mean", "marginals.missing_rate_step_diff_mean"),
    ("marginals: missing-rate difference per step, max", "marginals.missing_rate_step_diff_max"),
)
ROWS = [r.label for r in READINGS.values()] + [label for label, _ in EXTRA_ROWS] + [LENGTH_ROW]


def models() -> dict[str, Any]:
    """The contenders, fresh: v1 with its published settings, HealthGymGAN with its defaults."""
    return {"HealthGymV1 (faithful)": hg.HealthGymV1(), "HealthGymGAN": hg.HealthGymGAN()}


def train_and_sample(
    model: Any, train: hg.Cohort, run_dir: Path, minutes: float
) -> tuple[hg.Cohort, dict[str, float]]:
    start = time.monotonic()
    model.fit(train, run_dir, max_minutes=minutes, progress=False)
    seconds = time.monotonic() - start
    return model.sample(len(train), seed=0), {"steps": model.result.steps, "seconds": seconds}


def scores(report: Any) -> dict[str, float]:
    """A report's summary values by label, plus the extra rows."""
    values = {r.metric: r.value for r in report.summary.itertuples()}
    return values | {label: report.value(key) for label, key in EXTRA_ROWS}


def length_ks(real: hg.Cohort, synth: hg.Cohort) -> float:
    return temporal_metrics(real, synth)["length_ks_complement"]


def compare(minutes: float, length_minutes: float, out: Path) -> tuple[pd.DataFrame, str]:
    """The side-by-side table (rows: metrics; columns: reference and models) and a note."""
    train, holdout = hg.datasets.demo().split(holdout=0.2, seed=0)
    ragged_train, ragged_holdout = cut_stays(hg.datasets.demo(), seed=0).split(holdout=0.2, seed=0)
    reference = scores(hg.evaluate(train, holdout))  # no privacy/utility: it is the holdout
    columns = {
        "real holdout (reference)": reference
        | {LENGTH_ROW: length_ks(ragged_train, ragged_holdout)}
    }
    runs = []
    for name, model in models().items():
        slug = name.split()[0].lower()
        synth, fixed = train_and_sample(model, train, out / slug, minutes)
        report = hg.evaluate(train, synth, holdout=holdout, outcome=OUTCOME)
        short, ragged = train_and_sample(
            models()[name], ragged_train, out / f"{slug}-ragged", length_minutes
        )
        columns[name] = scores(report) | {LENGTH_ROW: length_ks(ragged_train, short)}
        runs.append(
            f"{name}: {fixed['steps']} generator steps in {fixed['seconds']:.0f} s on the demo "
            f"cohort, {ragged['steps']} in {ragged['seconds']:.0f} s on the variable-length variant"
        )
    table = pd.DataFrame(columns).reindex(ROWS).dropna(how="all")
    return table, "; ".join(runs)


def markdown(table: pd.DataFrame) -> str:
    def cells(values: list[Any]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    rows = [
        cells([label, *("" if pd.isna(v) else f"{v:.3f}" for v in row)])
        for label, row in table.iterrows()
    ]
    return "\n".join([cells(["metric", *table.columns]), "|---|" + "---:|" * table.shape[1], *rows])


def environment() -> dict[str, str]:
    """Date, commit, CPU model and torch version, for the record."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "cpu": f"{cpu}, {torch.get_num_threads()} torch thread(s)",
        "torch": torch.__version__,
    }


def append(section: str, path: Path = BENCHMARKS_FILE) -> None:
    """Append a section (never rewrite: others add theirs to the same file)."""
    if not path.exists():
        path.write_text(HEADER)
    with open(path, "a") as f:
        f.write("\n" + section + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per model")
    parser.add_argument(
        "--length-minutes", type=float, help="budget per model on the variable-length variant "
        "(default: half of --minutes)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="keep the run folders here (default: temp)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on 2 cores)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    length_minutes = args.minutes / 2 if args.length_minutes is None else args.length_minutes
    with tempfile.TemporaryDirectory(prefix="beyond-v1-") as tmp:
        table, runs = compare(args.minutes, length_minutes, args.out or Path(tmp))
    env = environment()
    command = (
        f"python -m benchmarks.beyond_v1 --minutes {args.minutes:g} "
        f"--length-minutes {length_minutes:g}"
    )
    section = "\n".join([
        f"## beyond_v1: HealthGymV1 vs HealthGymGAN on the demo cohort ({env['date']})",
        "",
        f"`{command}`; commit {env['commit']}; {env['cpu']}; torch {env['torch']}.",
        f"Training split 3,200 patients, holdout 800, {len(table.columns) - 1} models x "
        f"{args.minutes:g} min; {runs}.",
        "",
        markdown(table),
    ])  # fmt: skip
    print(section)
    append(section)


if __name__ == "__main__":
    main()
