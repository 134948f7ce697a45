"""Utility: can a model trained on synthetic patients predict a real outcome?

Train on synthetic, test on real (TSTR) against train on real, test on real (TRTR): the same
`HistGradientBoostingClassifier` on per-patient summary features, AUROC on the real holdout
(or, without one, on a 20% patient split of the real cohort, the rest being TRTR's training
set). The outcome is a static binary variable (its second level is the positive class) and is
excluded from the features. `auroc_ratio = TSTR / TRTR`: 1 means synthetic data is as useful
as real data for this task. A synthetic cohort whose outcome has a single class cannot train
a classifier; TSTR AUROC is then 0.5 (chance), and the report says so.

The summary features (`patient_features`) are fixed-length whatever a patient's stay:
statics as values (reals) or one-hot levels; per dynamic real its mean, min, max, last
observed value and missing share; per dynamic categorical its last observed level and most
frequent level (one-hot) and missing share. The privacy checks use the same features.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from ..cohort import Cohort, level_codes


def patient_features(cohort: Cohort, exclude: Iterable[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """One row per patient (table order, indexed by id) and the names of its 0/1 columns."""
    schema, table = cohort.schema, cohort.table
    exclude = set(exclude)
    patient, ids = pd.factorize(table[schema.id])
    cols: dict[str, np.ndarray] = {}
    indicators: list[str] = []

    def one_hot(prefix: str, codes: np.ndarray, levels: list[Any]) -> None:
        for k, level in enumerate(levels):
            cols[f"{prefix}={level}"] = (codes == k).astype(float)
            indicators.append(f"{prefix}={level}")

    statics = cohort.static_table()
    for v in schema.static:
        if v.name in exclude:
            continue
        if v.kind == "real":
            cols[v.name] = statics[v.name].to_numpy(float)
        else:
            one_hot(v.name, level_codes(statics[v.name], v.levels), v.levels)
    for v in schema.dynamic:
        if v.name in exclude:
            continue
        col = table[v.name]
        cols[f"{v.name}:missing"] = col.isna().groupby(patient).mean().to_numpy()
        if v.kind == "real":
            agg = col.groupby(patient).agg(["mean", "min", "max", "last"])
            for stat in agg.columns:
                cols[f"{v.name}:{stat}"] = agg[stat].to_numpy(float)
            continue
        codes = level_codes(col, v.levels)
        m = codes >= 0
        counts = np.zeros((len(ids), len(v.levels)))
        np.add.at(counts, (patient[m], codes[m]), 1)
        mode = np.where(counts.sum(1) > 0, counts.argmax(1), -1)
        last = pd.Series(codes[m]).groupby(patient[m]).last()
        last = last.reindex(range(len(ids)), fill_value=-1).to_numpy()
        one_hot(f"{v.name}:last", last, v.levels)
        one_hot(f"{v.name}:mode", mode, v.levels)
    return pd.DataFrame(cols, index=pd.Index(ids, name=schema.id)), indicators


def check_outcome(cohort: Cohort, outcome: str) -> None:
    """The outcome must be a static binary variable of the cohort."""
    if outcome not in cohort.schema:
        raise ValueError(
            f"outcome {outcome!r} is not a variable; the cohort has {cohort.schema.names}"
        )
    v = cohort.schema[outcome]
    if v.role != "static" or v.kind != "binary":
        raise ValueError(
            f"outcome {outcome!r} must be a static binary variable, not {v.role} {v.kind}"
        )


def _features_and_target(cohort: Cohort, outcome: str) -> tuple[pd.DataFrame, np.ndarray]:
    x, _ = patient_features(cohort, exclude=[outcome])
    codes = level_codes(cohort.static_table()[outcome], cohort.schema[outcome].levels)
    keep = codes >= 0
    return x[keep], codes[keep]


XY = tuple[pd.DataFrame, np.ndarray]


def _auroc(train: XY, test: XY, seed: int) -> tuple[float, str | None]:
    """AUROC on `test` of a classifier fit on `train`, or a fallback and the reason."""
    (x, y), (x_test, y_test) = train, test
    if len(np.unique(y_test)) < 2:
        return np.nan, "the real test set has a single outcome class: AUROC undefined"
    if len(np.unique(y)) < 2:
        return 0.5, "its outcome has a single class: no classifier can be trained, AUROC = 0.5"
    # One thread: per-patient tables are small, and OpenMP threads stall when the machine is
    # busy (5x slower, measured on 2 cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        model = HistGradientBoostingClassifier(random_state=seed).fit(x, y)
        scores = model.predict_proba(x_test)[:, 1]
    return float(roc_auc_score(y_test, scores)), None


def _share(y: np.ndarray) -> float:
    return float(np.mean(y)) if len(y) else np.nan


def utility_metrics(
    real: Cohort, synth: Cohort, outcome: str, holdout: Cohort | None = None, seed: int = 0
) -> dict[str, Any]:
    """TSTR and TRTR AUROC for `outcome` and their ratio (see the module docstring)."""
    check_outcome(real, outcome)
    if holdout is None:
        real, holdout = real.split(holdout=0.2, seed=seed)
        test_set = "20% of the real patients (no holdout given)"
    else:
        test_set = "the holdout"
    test = _features_and_target(holdout, outcome)
    train_real = _features_and_target(real, outcome)
    train_synth = _features_and_target(synth, outcome)
    trtr, note_real = _auroc(train_real, test, seed)
    tstr, note_synth = _auroc(train_synth, test, seed)
    notes = [f"utility, real training set: {note_real}"] if note_real else []
    if note_synth:
        notes.append(f"utility, synthetic training set: {note_synth}")
    ratio = tstr / trtr if np.isfinite(trtr) and trtr > 0 else np.nan
    return {
        "outcome": outcome,
        "test_set": test_set,
        "auroc_trtr": trtr,
        "auroc_tstr": tstr,
        "auroc_ratio": ratio,
        "patients": {
            "real_train": len(train_real[1]),
            "synthetic": len(train_synth[1]),
            "test": len(test[1]),
        },
        "positive_rate": {
            "real_train": _share(train_real[1]),
            "synthetic": _share(train_synth[1]),
            "test": _share(test[1]),
        },
        "notes": notes,
    }
