"""The comparison: cohorts, one model per worker process (fit within the budget, sample as
many patients as the training set, `healthgym.evaluate` against the real holdout, save
everything under `runs/peers/<cohort>/<model>/`), the results table and its section in
BENCHMARKS.md."""

from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import shutil
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import commit, cpu_model

#: name -> (module, adapter class, pip distribution that must be installed)
MODELS: dict[str, tuple[str, str, str]] = {
    "healthgym": ("benchmarks.peers.healthgym_models", "HealthGymAdapter", "healthgym"),
    "healthgym-v1": ("benchmarks.peers.healthgym_models", "HealthGymV1Adapter", "healthgym"),
    "healthgym-gan": ("benchmarks.peers.healthgym_models", "HealthGymGANAdapter", "healthgym"),
    "tabularargn": ("benchmarks.peers.tabularargn", "TabularARGNAdapter", "mostlyai-engine"),
    "dgan": ("benchmarks.peers.dgan", "DGANAdapter", "gretel-synthetics"),
    "par": ("benchmarks.peers.par", "PARAdapter", "sdv"),
    # not in the default list: DGAN without per-patient example scaling (see dgan.py)
    "dgan-noexample": ("benchmarks.peers.dgan", "DGANNoExampleScalingAdapter", "gretel-synthetics"),
}
DEFAULT_MODELS = ("healthgym", "healthgym-gan", "healthgym-v1", "tabularargn", "dgan", "par")
COHORTS = ("demo", "varlen", "visits")
OUTCOME = "in_hospital_death"
HOLDOUT, SEED = 0.2, 0
VARLEN_PATIENTS = 400
PEER_PACKAGES = ("mostlyai-engine", "gretel-synthetics", "sdv", "deepecho")
LOG = "worker.log"  #: each model's stdout and stderr, in its output folder

#: (column header, summary key, direction: "+" higher is better, "-" lower, "0.5" ideal 0.5)
COLUMNS: list[tuple[str, str, str]] = [
    ("KS compl.", "marginals.ks_complement_mean", "+"),
    ("TV compl.", "marginals.tv_complement_mean", "+"),
    ("missing diff", "marginals.missing_rate_diff_mean", "-"),
    ("assoc. diff", "associations.mean_abs_diff", "-"),
    ("autocorr. diff", "temporal.autocorrelation_mad", "-"),
    ("trend diff", "temporal.trend_corr_mad", "-"),
    ("cycle diff", "temporal.cycle_corr_mad", "-"),
    ("length KS compl.", "temporal.length_ks_complement", "+"),
    ("lag-1 excess", "temporal.lag1_gap_excess", "-"),
    ("within lag-1 excess", "temporal.within_lag1_gap_excess", "-"),
    ("delta KS", "temporal.delta_ks_mean", "-"),
    ("backwards share", "temporal.backwards_share", "-"),
    ("static consist.", "structure.static_consistency", "+"),
    ("TSTR vs TRTR, chance-corrected", "utility.auroc_ratio", "+"),
    ("MIA AUROC", "privacy.mia_auroc", "0.5"),
    ("DCR share", "privacy.dcr_share", "0.5"),
    ("DCR hub share", "privacy.dcr_hub_share", "-"),
]
#: Bootstrap 95% intervals kept in result.json ("intervals") and named in the section.
INTERVALS = {
    "utility.auroc_ratio": "utility.auroc_ratio_ci",
    "utility.auroc_tstr": "utility.auroc_tstr_ci",
    "utility.auroc_trtr": "utility.auroc_trtr_ci",
}


# ---- cohorts -------------------------------------------------------------------------------
def _cut_stays(cohort: Any, seed: int = 0) -> Any:
    """Each stay cut after a uniform 1..its length steps (used when healthgym has no
    `datasets.variable_length.cut_stays`)."""
    from healthgym import Cohort

    lengths = cohort.lengths.to_numpy()
    keep = np.random.default_rng(seed).integers(1, lengths + 1)
    pid = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(cohort.table)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return Cohort(cohort.table[pos < keep[pid]].reset_index(drop=True), cohort.schema)


def varlen_cohort(n: int = VARLEN_PATIENTS, seed: int = SEED) -> Any:
    """`n` demo patients (a seeded draw), each stay cut at a seeded random end (1..12 steps);
    the demo's missing values are kept. healthgym's `cut_stays` when it exists."""
    import healthgym as hg

    try:
        from healthgym.datasets.variable_length import cut_stays
    except ImportError:
        cut_stays = _cut_stays
    demo = hg.datasets.demo()
    ids = demo.ids
    pick = ids[np.sort(np.random.default_rng(seed).permutation(len(ids))[:n])]
    return cut_stays(demo.subset(pick), seed=seed)


def load_cohort(name: str) -> tuple[Any, Any]:
    """(train, holdout): split by patient, 80/20, seed 0."""
    import healthgym as hg

    if name == "demo":
        cohort = hg.datasets.demo()
    elif name == "varlen":
        cohort = varlen_cohort()
    elif name == "visits":
        cohort = hg.datasets.visits()
    else:
        raise ValueError(f"unknown cohort {name!r}; known: {COHORTS}")
    return cohort.split(holdout=HOLDOUT, seed=SEED)


# ---- one model (worker process) ------------------------------------------------------------
def make_adapter(name: str, run_dir: Path) -> Any:
    module, cls, _ = MODELS[name]
    adapter_class = getattr(importlib.import_module(module), cls)
    kw: dict[str, Any] = {"run_dir": run_dir, "seed": SEED}
    return adapter_class(**kw)


def run_model(
    name: str, cohort: str, minutes: float, threads: int, out: Path, fit_only: bool = False
) -> dict[str, Any]:
    """Fit, sample, evaluate one model; write out/result.json, the synthetic cohort and the
    report; return the result. Failures are results too (status + error)."""
    import torch

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # a previous run's files; the log the parent is writing stays
        if old.name != LOG:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    result: dict[str, Any] = {
        "model": name,
        "cohort": cohort,
        "minutes": minutes,
        "threads": threads,
        "date": _now(),
        "commit": commit(),
        "load_start": os.getloadavg(),
    }
    try:
        train, holdout = load_cohort(cohort)
        result["train_patients"], result["holdout_patients"] = len(train), len(holdout)
        try:
            adapter = make_adapter(name, out / "run")
        except ImportError as e:
            result |= {"status": "skipped", "error": f"{type(e).__name__}: {e}"}
            return _write(out, result)
        result["library"] = adapter.library
        result["settings"] = {k: str(v) for k, v in adapter.settings.items()}
        t0 = time.monotonic()
        adapter.fit(train, minutes)
        result["train_seconds"] = time.monotonic() - t0
        result["progress"] = adapter.progress
        if fit_only:
            result["status"] = "ok (fit only)"
            result["load_end"] = os.getloadavg()
            return _write(out, result)
        t0 = time.monotonic()
        synth = adapter.sample(len(train))
        result["sample_seconds"] = time.monotonic() - t0
        result["synthetic_patients"] = len(synth)
        synth.to_parquet(out / "synthetic.parquet")
        synth.schema.to_yaml(out / "schema.yaml")
        t0 = time.monotonic()
        _evaluate(train, synth, holdout, out, result)
        result["evaluate_seconds"] = time.monotonic() - t0
        result["notes"] = list(dict.fromkeys(adapter.notes))
        result["status"] = "ok"
    except Exception as e:  # a failing peer is a row of the table, not the end of the run
        result |= {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        (out / "traceback.txt").write_text(traceback.format_exc())
    result["load_end"] = os.getloadavg()
    return _write(out, result)


def _evaluate(train: Any, synth: Any, holdout: Any, out: Path, result: dict[str, Any]) -> Any:
    """`healthgym.evaluate` as every model gets it (holdout, outcome, the run's learning
    dynamics figure when there is one); writes out/report (replacing an old one) and sets
    result's summary, intervals, report_notes and evaluate_error (only when it failed)."""
    import healthgym as hg

    dynamics = out / "run" / "learning_dynamics.png"
    kw = {"learning_dynamics": dynamics if dynamics.exists() else None}
    result.pop("evaluate_error", None)
    try:
        report = hg.evaluate(train, synth, holdout=holdout, outcome=OUTCOME, **kw)
    except ValueError as e:
        # healthgym's utility check fails on synthetic features that are entirely NaN
        # (a dynamic real never generated); score the rest and say so.
        result["evaluate_error"] = f"{type(e).__name__}: {e}"
        report = hg.evaluate(train, synth, holdout=holdout, **kw)
    if (out / "report").is_dir():
        shutil.rmtree(out / "report")
    report.save(out / "report")
    result["summary"] = {k: report.value(k) for k, _ in _summary_keys(report)}
    result["intervals"] = _intervals(report)
    result["report_notes"] = list(report.notes)
    return report


REFERENCE = "real holdout (reference)"


def reference_result(
    cohort: str, out: Path, split: tuple[Any, Any] | None = None
) -> dict[str, Any]:
    """The real holdout scored as if it were synthetic: the values a perfect generator could
    reach on this cohort (sampling noise of the metrics). Privacy needs a third set, so it
    is left out; utility then trains "TSTR" on the holdout and tests on 20% of the training
    patients, against TRTR on the other 80%. `split`: `load_cohort(cohort)` when given."""
    import healthgym as hg

    train, holdout = split if split is not None else load_cohort(cohort)
    out.mkdir(parents=True, exist_ok=True)
    report = hg.evaluate(train, holdout, outcome=OUTCOME)
    if (out / "report").is_dir():
        shutil.rmtree(out / "report")
    report.save(out / "report")
    result = {
        "model": REFERENCE,
        "cohort": cohort,
        "status": "ok",
        "reference": True,
        "date": _now(),
        "commit": commit(),
        "train_patients": len(train),
        "holdout_patients": len(holdout),
        "summary": {k: report.value(k) for k, _ in _summary_keys(report)},
        "intervals": _intervals(report),
        "report_notes": list(report.notes),
    }
    return _write(out, result)


# ---- rescoring saved runs ------------------------------------------------------------------
def saved_models(cohort_dir: Path) -> list[str]:
    """The model folders under `cohort_dir` that hold a synthetic cohort: those of MODELS in
    its order, then any others by name (the reference row has no synthetic cohort)."""
    found = {p.parent.name for p in cohort_dir.glob("*/synthetic.parquet")}
    return [m for m in MODELS if m in found] + sorted(found - set(MODELS))


def rescore_model(
    name: str, cohort: str, out: Path, split: tuple[Any, Any] | None = None
) -> dict[str, Any]:
    """Score a saved synthetic cohort (out/synthetic.parquet) again with the current
    `healthgym.evaluate`, against the same split and with the same call as `run_model`.
    result.json keeps the training facts (train_seconds, progress, loads, settings, notes,
    date, commit, ...); `summary`, `intervals`, `report_notes`, `evaluate_error` and report/
    are replaced; `rescored` says when and at which commit; the first summary is kept as
    `original_summary`. A failure is a row of the table and leaves the folder as it was."""
    from healthgym import Cohort

    path = out / "result.json"
    try:
        result = json.loads(path.read_text()) if path.exists() else {}
    except ValueError as e:
        result = {"error_reading": f"{type(e).__name__}: {e}"}
    result = {"model": name, "cohort": cohort, **result}
    if not (out / "synthetic.parquet").exists():
        return result | {"status": "failed", "error": f"rescore: no synthetic.parquet in {out}"}
    previous = result.get("rescored", {})
    written = previous.get("original_written")
    if written is None and path.exists():
        written = _now(path.stat().st_mtime)
    original = {
        k: result[k] for k in ("summary", "report_notes", "evaluate_seconds") if k in result
    }
    new = dict(result)
    try:
        train, holdout = split if split is not None else load_cohort(cohort)
        synth = Cohort.from_parquet(out / "synthetic.parquet", train.schema, strict=False)
        t0 = time.monotonic()
        _evaluate(train, synth, holdout, out, new)
        seconds = time.monotonic() - t0
    except Exception as e:
        (out / "rescore_traceback.txt").write_text(traceback.format_exc())
        return result | {"status": "failed", "error": f"rescore: {type(e).__name__}: {e}"}
    if "original_summary" not in new and "summary" in original:
        new["original_summary"] = original["summary"]
    new["status"] = "ok"
    new.pop("error", None)
    new["rescored"] = {
        "date": _now(),
        "commit": commit(),
        "evaluate_seconds": seconds,
        "synthetic_patients": len(synth),
        "original_written": written,  # result.json's time before the first rescore
        "original_evaluate_seconds": previous.get(
            "original_evaluate_seconds", original.get("evaluate_seconds")
        ),
    }
    return _write(out, new)


def _intervals(report: Any) -> dict[str, list[float]]:
    out = {}
    for key, ci in INTERVALS.items():
        node: Any = report.metrics
        for part in ci.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out[key] = [float(x) for x in node]
    return out


def _now(timestamp: float | None = None) -> str:
    if timestamp is None:
        return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def _summary_keys(report: Any) -> list[tuple[str, Any]]:
    return [(row.key, row.value) for row in report.summary.itertuples()]


def _write(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return result


# ---- the table -----------------------------------------------------------------------------
def fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def build_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table: one row per model, the COLUMNS and the training seconds."""
    head = ["model", *[f"{h} ({d if d != '0.5' else '~0.5'})" for h, _, d in COLUMNS]]
    head.append("train s")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.get("status") != "ok":
            what = r.get("status", "failed")
            cells = [f"{what}: {r.get('error', '')}"[:120]] + [""] * (len(head) - 2)
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
            continue
        summary = r.get("summary", {})
        cells = [r["model"], *[fmt(summary.get(key)) for _, key, _ in COLUMNS]]
        seconds = r.get("train_seconds")
        cells.append("-" if seconds is None else f"{seconds:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


LEGEND = (
    "(+) higher is better, (-) lower is better, (~0.5) 0.5 is ideal. Definitions: "
    "docs/evaluation.md (summary keys `marginals.ks_complement_mean`, "
    "`marginals.tv_complement_mean`, "
    "`marginals.missing_rate_diff_mean`, `associations.mean_abs_diff`, "
    "`temporal.autocorrelation_mad`, `temporal.trend_corr_mad`, `temporal.cycle_corr_mad`, "
    "`temporal.length_ks_complement`, `temporal.lag1_gap_excess` and "
    "`temporal.within_lag1_gap_excess` (the synthetic cohort's lag-1 autocorrelation gap to the "
    "training patients minus the real holdout's; issue 15's target: <= 0.02), "
    "`temporal.delta_ks_mean`, `temporal.backwards_share`, "
    "`structure.static_consistency`, `utility.auroc_ratio` "
    "(chance-corrected: (TSTR - 0.5) / (TRTR - 0.5), clipped to [0, 1]), `privacy.mia_auroc`, "
    "`privacy.dcr_share`, `privacy.dcr_hub_share`). `train s`: wall seconds of the adapter's "
    "`fit` (data conversion and library preprocessing included)."
)
RESCORED = "rescored with the current evaluation; training as recorded in the original run"


# ---- environment ---------------------------------------------------------------------------
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("healthgym", "torch", *PEER_PACKAGES, "numpy", "pandas", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def section(
    results: list[dict[str, Any]],
    cohort: str,
    minutes: float,
    threads: int,
    command: str,
    started: datetime.datetime,
    label: str = "",
    rescored: bool = False,
) -> str:
    """The BENCHMARKS.md section of one comparison run; `rescored`: of saved runs scored
    again (`rescore_model`), `started` the rescore's time, the training facts as recorded."""
    v = versions()
    ok = [r for r in results if r.get("status") == "ok"]
    first = results[0] if results else {}
    sizes = (
        f"{first.get('train_patients', '?')} training / {first.get('holdout_patients', '?')} "
        "holdout patients"
    )
    if rescored:
        trained = [r for r in results if not r.get("reference")]
        minutes_text = "/".join(sorted({f"{r['minutes']:g}" for r in trained if "minutes" in r}))
        threads_text = "/".join(sorted({str(r["threads"]) for r in trained if "threads" in r}))
        title = f"{minutes_text or '?'} min per model{label} ({RESCORED}; "
        setup = [
            f"- command: `{command}`",
            f"- evaluation: commit {commit()}, healthgym {v['healthgym']}; CPU {cpu_model()}, "
            f"{os.cpu_count()} cores (shared)",
            f"- training and sampling: as recorded in each model's result.json (torch "
            f"{threads_text or '?'} thread(s) for every model); the synthetic cohorts are the "
            "saved synthetic.parquet files, scored against the same split",
        ]
    else:
        title = f"{minutes:g} min per model{label} ("
        setup = [
            f"- command: `{command}`",
            f"- commit {commit()}; CPU {cpu_model()}, {os.cpu_count()} cores (shared); "
            f"torch {v['torch']} with {threads} thread(s) for every model",
        ]
    lines = [
        f"## Peers: {cohort} cohort, {title}{started:%Y-%m-%d %H:%M} UTC)",
        "",
        *setup,
        "- versions: " + ", ".join(f"{k} {v[k]}" for k in ("healthgym", *PEER_PACKAGES, "python")),
        f"- cohort: {sizes} ({HOLDOUT:.0%} holdout by patient, seed {SEED}); every model "
        f"samples as many patients as it trained on; outcome `{OUTCOME}`",
        f"- load average (1 min) at each model's {'training ' if rescored else ''}start / end: "
        + ", ".join(
            f"{r['model']} {r.get('load_start', [0])[0]:.2f} / {r.get('load_end', [0])[0]:.2f}"
            for r in results
            if not r.get("reference")
        ),
        "",
        build_table(results),
        "",
        LEGEND,
        "",
    ]
    for r in ok:
        ci = _interval_text(r) + "".join(f"; evaluation: {n}" for n in r.get("report_notes", []))
        if r.get("reference"):
            lines.append(
                f"- {r['model']}: the {r['holdout_patients']} holdout patients scored as the "
                "synthetic cohort (no privacy; utility trains on the holdout and tests on 20% "
                f"of the training patients): what a perfect generator would reach{ci}"
            )
            continue
        extra = "; ".join(r.get("notes", [])) or "no output repairs"
        if r.get("evaluate_error"):
            extra += (
                "; healthgym.evaluate failed with the outcome "
                f"({r['evaluate_error']}), scored without utility"
            )
        if rescored:
            if r.get("date"):
                extra += f"; run started {_minute(r['date'])} UTC"
                extra += f" at commit {r['commit']}" if r.get("commit") else ""
            else:
                written = (r.get("rescored") or {}).get("original_written")
                extra += (
                    f"; original result.json written {_minute(written)} UTC (no run date or "
                    "commit recorded)"
                )
        sampled = r.get("synthetic_patients", "?")
        seconds = r.get("sample_seconds")
        took = "" if seconds is None else f" in {seconds:.0f} s"
        lines.append(
            f"- {r['model']}: {r.get('progress', '')}; sampled {sampled} patients{took}; "
            f"{extra}{ci}"
        )
    for r in results:
        if r.get("status") != "ok":
            lines.append(f"- {r['model']}: {r.get('status')}: {r.get('error', '')}")
    lines.append("")
    return "\n".join(lines)


def _minute(iso: Any) -> str:
    return str(iso or "?")[:16].replace("T", " ")


def _interval_text(result: dict[str, Any]) -> str:
    ci = (result.get("intervals") or {}).get("utility.auroc_ratio")
    if not ci or not all(np.isfinite(ci)):
        return ""
    return f"; TSTR vs TRTR 95% bootstrap interval {ci[0]:.3f}-{ci[1]:.3f}"


def append_section(text: str, path: Path) -> None:
    """Append to BENCHMARKS.md (created with a title when absent); never rewrites it."""
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write("# Benchmarks\n\n")
        elif not path.read_text().endswith("\n\n"):
            f.write("\n")
        f.write(text)
