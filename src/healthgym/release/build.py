"""`build_release`: draw the synthetic cohort from a run, check it against the training and
holdout patients, and write the bundle a data custodian hands out, or refuse.

Refused (ReleaseRefused, nothing written) when a synthetic patient's whole record equals a
training patient's that no holdout patient shares, or when the membership-inference AUROC
exceeds `max_mia`. The bundle is written into a temporary folder and renamed into place only
when complete.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import write_folder_atomic
from ..data.cohort import Cohort, level_codes
from ..evaluation import evaluate
from ..evaluation.report import to_json
from ..training import run_folder
from .attribute import attribute_inference
from .documents import datasheet, disclosure_risk, model_card
from .manifest import write_manifest

#: The membership-inference AUROC above which a release is refused (custodian's `max_mia`).
MAX_MIA = 0.6
#: Real values are compared at this many decimals when looking for copied records.
DECIMALS = 6


class ReleaseRefused(ValueError):
    """The synthetic cohort failed a disclosure check; the message names it."""


def build_release(
    run: str | Path,
    train: Cohort,
    holdout: Cohort,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    outcome: str | None = None,
    sensitive: list[str] | None = None,
    quasi: list[str] | None = None,
    max_mia: float = MAX_MIA,
    title: str | None = None,
    source: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write the release bundle of `n` patients drawn from `run` to the folder `out`.

    `train`/`holdout`: the real patients that trained the run and real patients it never saw
    (both read with the run's schema); `outcome`: a static binary variable for the utility
    check; `sensitive`/`quasi`: the attribute-inference attack's targets and what the attacker
    knows (default: every static variable from the others); `source`: the training table's
    provenance (`sources.read_provenance`). Returns the disclosure figures.
    """
    from .. import load

    if not 0.5 <= max_mia <= 1:
        raise ValueError(f"max_mia must be between 0.5 and 1, got {max_mia}")
    model = load(run)
    synthetic = model.sample(n, seed=seed)
    copies = copied_records(train, synthetic, holdout)
    if copies:
        raise ReleaseRefused(
            f"refused: {len(copies)} synthetic patients are exact copies of training patients "
            f"(e.g. training id {copies[0]}); retrain (fewer epochs, DP) before releasing"
        )
    report = evaluate(
        train,
        synthetic,
        holdout=holdout,
        outcome=outcome,
        seed=seed,
        learning_dynamics=Path(run) / run_folder.PLOT_FILE,
        guarantee=run_folder.read_privacy(run),
    )
    mia = report.metrics["privacy"]["mia_auroc"]
    if mia > max_mia:
        raise ReleaseRefused(
            f"refused: membership-inference AUROC {mia:.3f} exceeds the limit {max_mia} "
            "(--max-mia): the synthetic cohort tells training patients from others"
        )
    attribute = attribute_inference(
        train, synthetic, holdout, sensitive=sensitive, quasi=quasi, seed=seed
    )
    facts = _facts(run, model, train, holdout, synthetic, report, seed, outcome, title, source)
    facts["attribute_excess"] = attribute["max_excess"]
    limits = {"max_mia": max_mia}
    disclosure = {
        "exact_copies": 0,
        "mia_auroc": mia,
        "max_mia": max_mia,
        "privacy": report.metrics["privacy"],
        "attribute_inference": attribute,
    }

    def write(folder: Path) -> None:
        synthetic.to_parquet(folder / "synthetic.parquet")
        synthetic.to_csv(folder / "synthetic.csv")
        synthetic.schema.to_yaml(folder / "schema.yaml")
        (folder / "report").mkdir()
        report.save(folder / "report")
        (folder / "datasheet.md").write_text(datasheet(facts))
        (folder / "model_card.md").write_text(model_card(facts))
        (folder / "disclosure_risk.md").write_text(disclosure_risk(facts, attribute, limits))
        (folder / "disclosure_risk.json").write_text(json.dumps(to_json(disclosure), indent=1))
        if source and source.get("definition"):
            (folder / "cohort_definition.yaml").write_text(source["definition"])
        write_manifest(folder)

    write_folder_atomic(out, write)
    return disclosure


def copied_records(train: Cohort, synthetic: Cohort, holdout: Cohort) -> list[Any]:
    """Ids of training patients whose whole record (every row, every variable, steps in
    order) a synthetic patient repeats, leaving out records a holdout patient also has
    (a record common in the population discloses no one)."""
    keys = [_record_keys(c) for c in (train, synthetic, holdout)]
    drawn, common = set(keys[1].values()), set(keys[2].values())
    return [pid for pid, key in keys[0].items() if key in drawn and key not in common]


def _record_keys(cohort: Cohort) -> dict[Any, bytes]:
    """Per patient, a digest of its rows (reals rounded to DECIMALS, levels as codes)."""
    schema = cohort.schema
    table = cohort.table.sort_values([schema.id, schema.time], kind="stable")
    columns = []
    for v in schema.variables:
        col = table[v.name]
        if v.kind == "real":
            columns.append(np.round(col.to_numpy(float), DECIMALS))
        else:
            columns.append(level_codes(col, v.levels).astype(float))
    values = np.column_stack(columns) if columns else np.empty((len(table), 0))
    values = np.where(np.isnan(values), np.inf, values)  # one bit pattern for missing
    ids = table[schema.id].to_numpy()
    bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    return {
        ids[a]: hashlib.blake2b(values[a:b].tobytes(), digest_size=16).digest()
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    }


def _facts(
    run: str | Path,
    model: Any,
    train: Cohort,
    holdout: Cohort,
    synthetic: Cohort,
    report: Any,
    seed: int,
    outcome: str | None,
    title: str | None,
    source: dict[str, str] | None,
) -> dict[str, Any]:
    """What the documents state, gathered once."""
    from .. import __version__

    meta = run_folder.read_meta(run)
    lengths = synthetic.lengths
    table = synthetic.table
    variables = [
        {
            "name": v.name,
            "kind": v.kind,
            "role": v.role,
            "levels": ", ".join(map(str, v.levels[:6])) + (", ..." if len(v.levels) > 6 else "")
            if v.levels
            else "",
            "missing_share": float(table[v.name].isna().mean()),
        }
        for v in synthetic.schema.variables
    ]
    privacy = run_folder.read_privacy(run) or {}
    definition = source.get("definition") if source else None
    preprocessing = (
        "built by `healthgym cohort` (grid, window and the aggregation of each variable in "
        "`cohort_definition.yaml`; steps without a value left missing)"
        if definition
        else f"{'**[CUSTODIAN]**'} describe the cleaning, aggregation and exclusions applied"
    )
    lo, hi = int(lengths.min()), int(lengths.max())
    return {
        "title": title or f"synthetic cohort from {Path(run).name}",
        "healthgym": __version__,
        "date": dt.date.today().isoformat(),
        "run": str(run),
        "seed": seed,
        "source": source if definition else None,
        "preprocessing": preprocessing,
        "outcome_text": f"`{outcome}`, the outcome of the utility check."
        if outcome
        else "None was named (`--outcome`).",
        "statics": [v.name for v in synthetic.schema.static],
        "variables": variables,
        "synthetic": {
            "patients": len(lengths),
            "rows": len(table),
            "steps": str(lo) if lo == hi else f"{lo} to {hi}",
        },
        "real": {
            "patients": len(train.lengths),
            "rows": len(train.table),
            "holdout_patients": len(holdout.lengths),
        },
        "model": {
            "family": meta.get("model"),
            "healthgym": meta.get("healthgym"),
            "summary": getattr(type(model), "summary", ""),
            "settings": {k: v for k, v in meta.get("config", {}).items() if v is not None},
            "training": _training(run),
            "privacy": privacy,
        },
        "copies": 0,
        "mia_auroc": report.metrics["privacy"]["mia_auroc"],
        "privacy": report.metrics["privacy"],
        "summary": report.summary[["metric", "value", "reading"]].to_dict("records"),
    }


def _training(run: str | Path) -> str:
    """Epochs, steps and step time from the run's metrics log."""
    path = Path(run) / run_folder.METRICS_FILE
    epochs, steps, seconds = 0, 0, 0.0
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            epochs = max(epochs, int(record.get("epoch", 0) or 0))
            steps = max(steps, int(record.get("step", 0) or 0))
            seconds += float(record.get("seconds", 0) or 0)
    return f"{epochs} epochs, {steps} optimiser steps, {seconds / 60:.1f} minutes of steps"
