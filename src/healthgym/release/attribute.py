"""Attribute inference: does the synthetic cohort let an attacker who knows a few facts about
a training patient infer another one?

The attack of medGAN (Choi et al. 2017) and of the synthetic-EHR benchmark of Yan et al.
(2022): the attacker knows a target's quasi-identifiers (by default the other baseline
variables: age, sex, ward, ...), finds the `k` nearest patients in the released data on
those, and predicts the sensitive variable from them (majority level; mean of a real).
The score is the share of training patients whose level is inferred right (for a real: R²
of the inferred values). The same attack run with the holdout (real patients from the same
population who did not train the model) as the attacker's data is what the population alone
reveals: `excess` = synthetic score - holdout score is what the release adds. Both
references are subsampled to the same size (mean over `DRAWS` draws), so neither wins by
having more neighbours. About 0 when the model generalises; large when it copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..data.cohort import Cohort, level_codes
from ..evaluation.privacy import rank_scaler

K = 1
DRAWS = 5
MAX_TARGETS = 2_000
#: Readings of `excess` (synthetic minus holdout score): good at most, fair at most.
GOOD, FAIR = 0.02, 0.05


def attribute_inference(
    train: Cohort,
    synthetic: Cohort,
    holdout: Cohort,
    *,
    sensitive: list[str] | None = None,
    quasi: list[str] | None = None,
    k: int = K,
    seed: int = 0,
) -> dict[str, Any]:
    """One attack per sensitive variable (default: every static variable, each inferred from
    the others or from `quasi`); see the module docstring for the scores."""
    schema = train.schema
    statics = [v.name for v in schema.static]
    sensitive = list(sensitive or statics)
    for name in [*sensitive, *(quasi or [])]:
        if name not in statics:
            raise ValueError(
                f"attribute inference reads static variables; {name!r} is not one of {statics}"
            )
    rng = np.random.default_rng(seed)
    frames = [c.static_table() for c in (train, synthetic, holdout)]
    targets = rng.permutation(len(frames[0]))[:MAX_TARGETS]
    attacks = []
    for target in sensitive:
        known = [q for q in (quasi or statics) if q != target]
        if not known:
            raise ValueError(f"no quasi-identifiers left to infer {target!r} from")
        x_train, x_synth, x_hold = _vectors(schema, frames, known)
        y_train, y_synth, y_hold = (_values(schema[target], f[target]) for f in frames)
        size = min(len(x_synth), len(x_hold))
        scores = {"synthetic": [], "holdout": []}
        for _ in range(DRAWS):
            for name, x_ref, y_ref in (
                ("synthetic", x_synth, y_synth),
                ("holdout", x_hold, y_hold),
            ):
                pick = rng.choice(len(x_ref), size, replace=False)
                guess = _infer(x_train[targets], x_ref[pick], y_ref[pick], schema[target], k)
                scores[name].append(_score(y_train[targets], guess, schema[target], y_train))
        synth, hold = float(np.mean(scores["synthetic"])), float(np.mean(scores["holdout"]))
        attacks.append(
            {
                "sensitive": target,
                "quasi_identifiers": known,
                "score": "accuracy" if schema[target].kind != "real" else "r2",
                "synthetic": synth,
                "holdout": hold,
                "excess": synth - hold,
                "reading": _reading(synth - hold),
            }
        )
    worst = max(a["excess"] for a in attacks)
    return {
        "k": k,
        "targets": len(targets),
        "reference_size": min(len(frames[1]), len(frames[2])),
        "attacks": attacks,
        "max_excess": worst,
        "reading": _reading(worst),
    }


def _reading(excess: float) -> str:
    return "good" if excess <= GOOD else "fair" if excess <= FAIR else "poor"


def _vectors(schema: Any, frames: list[Any], known: list[str]) -> list[np.ndarray]:
    """Quasi-identifier vectors: reals rank-scaled on the training patients, levels one-hot."""
    parts: list[list[np.ndarray]] = [[] for _ in frames]
    for name in known:
        v = schema[name]
        if v.kind == "real":
            scale = rank_scaler(frames[0][[name]].to_numpy(float))
            for i, f in enumerate(frames):
                parts[i].append(scale(f[[name]].to_numpy(float)))
        else:
            for i, f in enumerate(frames):
                codes = level_codes(f[name], v.levels)
                parts[i].append((codes[:, None] == np.arange(len(v.levels))).astype(float))
    return [np.hstack(p) for p in parts]


def _values(v: Any, col: Any) -> np.ndarray:
    """Level codes (-1 missing) or real values (nan missing)."""
    return col.to_numpy(float) if v.kind == "real" else level_codes(col, v.levels)


def _infer(x: np.ndarray, x_ref: np.ndarray, y_ref: np.ndarray, v: Any, k: int) -> np.ndarray:
    """Each target's inferred value from its k nearest reference patients."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x_ref))
    with threadpool_limits(limits=1):
        index = NearestNeighbors(n_neighbors=k).fit(x_ref).kneighbors(x, return_distance=False)
    votes = y_ref[index]
    if v.kind == "real":
        present = np.isfinite(votes)
        counts = present.sum(axis=1)
        sums = np.where(present, votes, 0.0).sum(axis=1)
        return np.divide(sums, counts, out=np.full(len(votes), np.nan), where=counts > 0)
    counts = np.stack([(votes == c).sum(axis=1) for c in range(len(v.levels))], axis=1)
    return counts.argmax(axis=1)


def _score(truth: np.ndarray, guess: np.ndarray, v: Any, train: np.ndarray) -> float:
    if v.kind == "real":
        ok = np.isfinite(truth) & np.isfinite(guess)
        total = float(np.nansum((truth[ok] - np.nanmean(train)) ** 2))
        return 1.0 - float(np.sum((truth[ok] - guess[ok]) ** 2)) / total if total > 0 else 0.0
    ok = truth >= 0
    return float(np.mean(truth[ok] == guess[ok])) if ok.any() else 0.0
