"""How good, useful and safe is a synthetic cohort? `evaluate(real, synthetic, ...)` -> Report.

One module per question: `marginals` (each variable alone), `associations` (pairs of
variables), `temporal` (dynamics, Health Gym's dynamic correlations, lengths), `structure`
(static drift, mode coverage), `row_kinds` (rows of kinds the real table never has),
`utility` (train on synthetic, test on real), `privacy`
(distances to training vs holdout patients); `report` turns them into a summary table with
readings, figures and a self-contained HTML page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.cohort import Cohort
from .associations import association_metrics, plot_associations
from .figures import MAX_PAGES, PANELS_PER_PAGE
from .guarantee import guarantee_metrics, guarantee_notes
from .marginals import marginal_metrics, plot_marginals
from .privacy import plot_privacy, privacy_metrics
from .report import READINGS, Report
from .row_kinds import plot_row_patterns, row_kind_metrics
from .structure import plot_static_combinations, structure_metrics
from .temporal import temporal_metrics
from .temporal_plots import (
    plot_autocorrelation,
    plot_dynamic_correlations,
    plot_lengths,
    plot_patients,
    plot_trajectories,
)
from .utility import check_outcome, utility_metrics

__all__ = ["READINGS", "Report", "evaluate"]

CAPTIONS = {
    "marginals": "Marginal distributions: kernel density (reals), level shares (categoricals).",
    "associations": "Pairwise associations over rows: real | synthetic | difference.",
    "dynamic_correlations": "Health Gym dynamic correlations of trends and cycles, Fisher-z "
    "pooled over patients.",
    "trajectories": "Mean +- SD per step of each dynamic real variable.",
    "autocorrelation": "Lag-1 autocorrelation per dynamic real variable, pooled over patients "
    "and within patients (each patient's mean removed), on rank-scaled values: real vs "
    "synthetic; the grey bar is the gap.",
    "patient_trajectories": "A few real and a few synthetic patients side by side, on shared "
    "axes per variable (time-like variables first).",
    "lengths": "Steps per patient.",
    "static_combinations": "Most common combinations of static categories (mode collapse).",
    "row_patterns": "Row patterns (which dynamic variables a row holds, and its binary flags): "
    "the real table's most common ones, real vs synthetic, and synthetic rows of patterns the "
    "real table never has.",
    "privacy": "Distances to the nearest training patient (DCR), to the nearest synthetic "
    "patient (membership attack) and Health Gym's row-level nearest distances; training "
    "curves left of holdout curves mean copying.",
    "learning_dynamics": "Training losses early and late in the run (learning_dynamics.png).",
}


def evaluate(
    real: Cohort,
    synthetic: Cohort,
    holdout: Cohort | None = None,
    outcome: str | None = None,
    *,
    lags: int = 3,
    seed: int = 0,
    learning_dynamics: str | Path | None = None,
    guarantee: dict[str, Any] | None = None,
) -> Report:
    """Compare a synthetic cohort with the real cohort it was trained on.

    `holdout` (real patients the generator never saw) enables the privacy checks, is the
    utility test set and the reference of the trajectory gaps (`temporal.*_excess`);
    `outcome` (a static binary variable) enables the utility check; `lags` is the largest
    autocorrelation lag; `learning_dynamics` is a run's
    `learning_dynamics.png` to embed. Cohorts may differ in size and stay lengths.
    `guarantee` is a run's model.json "privacy" block (`training.run_folder.read_privacy`; {} for a
    run trained without differential privacy), shown beside the empirical privacy checks.
    """
    if lags < 1:
        raise ValueError(f"lags must be >= 1, got {lags}")
    _check_compatible(real, synthetic, "synthetic")
    if holdout is not None:
        _check_compatible(real, holdout, "holdout")
    if outcome is not None:
        check_outcome(real, outcome)
    cohorts = {"real": real, "synthetic": synthetic, "holdout": holdout}
    metrics: dict[str, Any] = {
        "cohorts": {k: _describe(c) for k, c in cohorts.items() if c is not None}
    }
    figures: dict[str, Any] = {}
    notes: list[str] = []

    metrics["marginals"] = marginal_metrics(real, synthetic)
    figures |= plot_marginals(real, synthetic)
    metrics["associations"] = association_metrics(real, synthetic)
    figures["associations"] = plot_associations(metrics["associations"])
    metrics["temporal"] = temporal_metrics(real, synthetic, lags=lags, holdout=holdout)
    figures["dynamic_correlations"] = plot_dynamic_correlations(metrics["temporal"])
    figures |= plot_trajectories(real, synthetic)
    figures["autocorrelation"] = plot_autocorrelation(metrics["temporal"])
    figures["patient_trajectories"] = plot_patients(real, synthetic, seed=seed)
    figures["lengths"] = plot_lengths(real, synthetic)
    metrics["structure"] = structure_metrics(real, synthetic)
    figures["static_combinations"] = plot_static_combinations(metrics["structure"])
    metrics["row_kinds"] = row_kind_metrics(real, synthetic, holdout)
    figures["row_patterns"] = plot_row_patterns(metrics["row_kinds"])

    if outcome is not None:
        metrics["utility"] = utility_metrics(real, synthetic, outcome, holdout, seed=seed)
        notes += metrics["utility"]["notes"]
    else:
        notes.append("utility skipped: no outcome given")
    if holdout is not None:
        metrics["privacy"], distances = privacy_metrics(real, synthetic, holdout, seed=seed)
        notes += metrics["privacy"]["notes"]
        figures["privacy"] = plot_privacy(distances)
    else:
        notes.append("privacy skipped: no holdout given")
    if guarantee is not None:
        metrics["guarantee"] = guarantee_metrics(guarantee)
        notes += guarantee_notes(guarantee)
    if learning_dynamics is not None:
        path = Path(learning_dynamics)
        if path.exists():
            figures["learning_dynamics"] = path.read_bytes()
        else:
            notes.append(f"no learning dynamics figure at {path}")

    shown = PANELS_PER_PAGE * MAX_PAGES
    if len(real.schema.variables) > shown:
        notes.append(f"figures show the first {shown} variables of {len(real.schema.variables)}")
    metrics["notes"] = notes
    figures = {k: v for k, v in figures.items() if v is not None}
    captions = {k: CAPTIONS.get(k) or CAPTIONS.get(k.rsplit("_", 1)[0], k) for k in figures}
    return Report(metrics, figures, captions=captions, notes=notes)


def _check_compatible(real: Cohort, other: Cohort, what: str) -> None:
    """Both must be cohorts over the same variables, kinds and levels."""
    for name, c in (("real", real), (what, other)):
        if not isinstance(c, Cohort):
            raise ValueError(f"{name} must be a healthgym Cohort, got {type(c).__name__}")
    a, b = real.schema, other.schema
    if a.names != b.names:
        raise ValueError(
            f"{what} cohort has variables {b.names}, the real cohort {a.names}; "
            "read both with the same schema"
        )
    for v, w in zip(a.variables, b.variables, strict=True):
        if (v.kind, v.levels) != (w.kind, w.levels):
            raise ValueError(
                f"variable {v.name!r} is {w.kind} {w.levels or ''} in the {what} cohort but "
                f"{v.kind} {v.levels or ''} in the real cohort; read both with the same schema"
            )


def _describe(cohort: Cohort) -> str:
    lengths = cohort.lengths
    lo, hi = int(lengths.min()), int(lengths.max())
    steps = f"{lo}" if lo == hi else f"{lo}..{hi}"
    return f"{len(lengths)} patients x {steps} steps ({len(cohort.table)} rows)"
