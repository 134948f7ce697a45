"""Utility: can a model trained on synthetic patients predict a real outcome?

Train on synthetic, test on real (TSTR) against train on real, test on real (TRTR): the same
`HistGradientBoostingClassifier` on per-patient summary features, AUROC on the real holdout
(or, without one, on a 20% patient split of the real cohort, the rest being TRTR's training
set). The outcome is a static binary variable (its second level is the positive class) and is
excluded from the features.

`auroc_ratio` is chance-corrected: `(TSTR - 0.5) / (TRTR - 0.5)`, clipped to [0, 1], the share
of real data's skill above chance that training on synthetic data keeps (1: as useful as real
data; 0: no better than chance). It is NaN, with a note, when TRTR <= 0.5 (real data carries
no skill to keep). The unclipped value and the plain `TSTR / TRTR` are kept in the metrics.
Bootstrap 95% intervals (`auroc_trtr_ci`, `auroc_tstr_ci`, `auroc_ratio_ci`) resample the test
patients (`BOOTSTRAP` draws, seeded, paired across TSTR and TRTR); they cover test-set noise,
not the variability of training.

A synthetic cohort whose outcome has a single class (or no known outcome) cannot train a
classifier: its model predicts that class for everyone, a constant score, so TSTR AUROC is
0.5 (chance), the ratio 0, and the report says so. Feature columns with no value in a
training set (a variable the synthetic cohort never generates) are dropped for that model:
they carry nothing to learn (sklearn's binning fails on them).

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
from scipy.stats import rankdata
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from ..data.cohort import Cohort, level_codes

#: Bootstrap resamples of the test patients for the AUROC intervals.
BOOTSTRAP = 200


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


def _scores(train: XY, test: XY, seed: int) -> tuple[np.ndarray, str | None]:
    """Positive-class scores on `test` of a classifier fit on `train`, and a note if any."""
    (x, y), (x_test, _) = train, test
    classes = np.unique(y)
    # A column with no value in the training set carries nothing to learn, and sklearn's
    # binning of an all-NaN column fails (1.9: "window shape cannot be larger").
    present = x.columns[x.notna().any().to_numpy()]
    if len(classes) < 2 or len(present) == 0:
        # Nothing to learn: the model predicts its only class (or the prior) for everyone, a
        # constant score, so AUROC = 0.5.
        constant = float(classes[0]) if len(classes) == 1 else 0.5
        if len(present) and len(classes) == 1:
            why = "its outcome has a single class"
        elif len(present):
            why = "it has no patient with a known outcome"
        else:
            why = "no feature has a value"
        return np.full(len(x_test), constant), f"{why}: no classifier, AUROC = 0.5 (chance)"
    # One thread: per-patient tables are small, and OpenMP threads stall when the machine is
    # busy.
    with threadpool_limits(limits=1, user_api="openmp"):
        model = HistGradientBoostingClassifier(random_state=seed).fit(x[present], y)
        return model.predict_proba(x_test[present])[:, 1], None


def auroc_rows(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of `scores` against the same row of 0/1 `y` (ties count half).

    Mann-Whitney with average ranks, vectorised over rows; NaN where a row has one class.
    """
    y = np.atleast_2d(y).astype(bool)
    ranks = rankdata(np.atleast_2d(scores), axis=1)
    pos = y.sum(1)
    neg = y.shape[1] - pos
    u = np.where(y, ranks, 0).sum(1) - pos * (pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / (pos * neg), np.nan)


def chance_corrected(tstr: Any, trtr: Any) -> Any:
    """(TSTR - 0.5) / (TRTR - 0.5), unclipped; NaN where TRTR <= 0.5 or either is NaN."""
    tstr, trtr = np.asarray(tstr, float), np.asarray(trtr, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(trtr > 0.5, (tstr - 0.5) / (trtr - 0.5), np.nan)


def _interval(values: np.ndarray) -> list[float]:
    values = values[np.isfinite(values)]
    if len(values) < 0.9 * BOOTSTRAP:  # too many undefined draws for a meaningful interval
        return [np.nan, np.nan]
    return [float(v) for v in np.percentile(values, [2.5, 97.5])]


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
    y_test = test[1]
    scores_real, note_real = _scores(train_real, test, seed)
    scores_synth, note_synth = _scores(train_synth, test, seed)
    notes = [f"utility, real training set: {note_real}"] if note_real else []
    if note_synth:
        notes.append(f"utility, synthetic training set: {note_synth}")

    nan_ci = [np.nan, np.nan]
    if len(np.unique(y_test)) < 2:
        notes.append("utility: the real test set has a single outcome class: AUROC undefined")
        trtr = tstr = np.nan
        ci = {"trtr": nan_ci, "tstr": nan_ci, "ratio": nan_ci}
    else:
        trtr = float(roc_auc_score(y_test, scores_real))
        tstr = float(roc_auc_score(y_test, scores_synth))
        # Paired bootstrap over test patients: the same draws for both models.
        draws = np.random.default_rng(seed).integers(0, len(y_test), (BOOTSTRAP, len(y_test)))
        boot = {
            "trtr": auroc_rows(y_test[draws], scores_real[draws]),
            "tstr": auroc_rows(y_test[draws], scores_synth[draws]),
        }
        boot["ratio"] = np.clip(chance_corrected(boot["tstr"], boot["trtr"]), 0, 1)
        ci = {k: _interval(v) for k, v in boot.items()}
    unclipped = float(chance_corrected(tstr, trtr))
    if np.isfinite(trtr) and trtr <= 0.5:
        notes.append(
            f"utility: real-data AUROC {trtr:.3f} is no better than chance: the chance-corrected "
            "ratio is undefined (NaN)"
        )
    elif np.isfinite(trtr) and ci["trtr"][0] <= 0.5:
        notes.append(
            f"utility: the 95% interval of real-data AUROC ({ci['trtr'][0]:.3f}-"
            f"{ci['trtr'][1]:.3f}) reaches chance: the ratio is mostly noise"
        )
    return {
        "outcome": outcome,
        "test_set": test_set,
        "auroc_trtr": trtr,
        "auroc_tstr": tstr,
        "auroc_ratio": float(np.clip(unclipped, 0, 1)),
        "auroc_ratio_unclipped": unclipped,
        "auroc_ratio_plain": tstr / trtr if np.isfinite(trtr) and trtr > 0 else np.nan,
        "auroc_trtr_ci": ci["trtr"],
        "auroc_tstr_ci": ci["tstr"],
        "auroc_ratio_ci": ci["ratio"],
        "bootstrap": BOOTSTRAP,
        "patients": {
            "real_train": len(train_real[1]),
            "synthetic": len(train_synth[1]),
            "test": len(y_test),
        },
        "positive_rate": {
            "real_train": _share(train_real[1]),
            "synthetic": _share(train_synth[1]),
            "test": _share(y_test),
        },
        "notes": notes,
    }
