"""Privacy: is the synthetic cohort closer to its training patients than to unseen ones?

Every check compares against a holdout: real patients from the same population that the
generator never saw. Distances are Euclidean between patient vectors: the summary features of
`utility.patient_features` over every variable (fixed length whatever the stay, so cohorts of
different lengths compare). Value columns are rank-scaled on the training set: each value
becomes its mid-rank empirical CDF among the training patients' values (linear between
them, 0 below the smallest and 1 above the largest), mapped to `(u - 0.5) * sqrt(12)` (SD 1,
within +-1.73); missing values sit at the training median (0). An outlier, or a synthetic
value far outside the real range, thus moves a patient at most 1.73 along one variable
instead of dominating the distance (with mean/SD scaling, one far-off variable made a single
training patient the nearest of almost every synthetic patient: hubness). The map is a
function, so exact copies stay at distance 0. 0/1 level columns stay 0/1: a different level
adds sqrt(2), about the weight of a 1.4-SD difference. Nearest neighbours come from sklearn
`NearestNeighbors`, queried in chunks (no full distance matrix); the distance to the
neighbour found is recomputed directly so exact copies read exactly 0.

- DCR (distance to closest record): each synthetic patient's distance to its nearest
  training patient, next to each holdout patient's (the baseline).
- DCR share: training and holdout are subsampled to the same size n = min(train, holdout);
  the share of synthetic patients nearer to the training subsample than to the holdout
  subsample (ties count half), median over `DCR_DRAWS` random draws of the subsamples (one
  draw when both sets already have n patients; mean, min and max in the metrics). About 0.5
  when the generator does not copy; towards 1 when it does. When train is larger than the
  holdout, a copier's share is diluted (a copy of a patient left out of the draw counts as
  chance), and a single hub training patient sits in only n / train of the draws, which the
  median discounts.
- Hub share (`dcr_hub_share`): the share of synthetic patients whose nearest training patient
  is the most common one (`holdout_hub_share`, the same for holdout patients, is the level of
  a real population). High means one training patient decides the DCR share for most
  synthetic patients (hubness: synthetic patients far from all real ones, or collapsed onto
  one region); the DCR share then says little and a note says so.
- Exact copies: synthetic patients at distance 0 from a training patient (the same share for
  holdout patients is reported as the chance level). Near copies: synthetic patients nearer
  to training than the 1st percentile of holdout-to-training distances (about 1% by chance).
- Membership inference AUROC: an attacker scores each real patient by minus its distance to
  the nearest synthetic patient; AUROC of telling training patients (members) from holdout
  patients. 0.5: no better than chance; towards 1: the synthetic data reveals membership.
- Row distances (Health Gym's check): each real row's distance to its nearest synthetic row
  (reals standardised by the training rows, missing as the mean, levels one-hot), training
  rows vs holdout rows, at most `MAX_QUERY_ROWS` each against at most `MAX_REFERENCE_ROWS`
  synthetic rows (random samples). `row_distance_ratio` = median train / median holdout:
  about 1 when safe, towards 0 when training rows are copied.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from ..data.cohort import Cohort, level_codes
from .figures import new_figure
from .utility import patient_features

MAX_QUERY_ROWS = 10_000
MAX_REFERENCE_ROWS = 50_000
#: Random draws of equal-size train/holdout subsamples behind the DCR share.
DCR_DRAWS = 10
#: Hub share above which the report notes that one training patient decides the DCR share.
HUB_NOTE = 0.2
#: Memory per chunk of query-to-reference distances.
CHUNK_BYTES = 64 * 2**20
EXACT = 1e-9


def nearest(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each query row to its nearest reference row and that row's index.

    Bounded-memory chunks. Single-threaded: on a busy machine OpenMP threads stall each other.
    """
    nn = NearestNeighbors(n_neighbors=1).fit(reference)
    step = max(1, CHUNK_BYTES // (8 * len(reference)))
    out = np.empty(len(queries))
    index = np.empty(len(queries), dtype=np.intp)
    with threadpool_limits(limits=1):
        for i in range(0, len(queries), step):
            q = queries[i : i + step]
            idx = nn.kneighbors(q, return_distance=False)[:, 0]
            out[i : i + step] = np.linalg.norm(q - reference[idx], axis=1)
            index[i : i + step] = idx
    return out, index


def nearest_distances(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Distance of each query row to its nearest reference row (see `nearest`)."""
    return nearest(queries, reference)[0]


def rank_scaler(train: np.ndarray) -> Any:
    """Per column, the map of values to `(u - 0.5) * sqrt(12)`, u the training mid-rank CDF.

    u is linear between the training values, 0 below the smallest, 1 above the largest;
    missing values map to 0 (the median). A column with no training value maps to 0.
    """
    grids = []
    for col in train.T:
        x = np.sort(col[np.isfinite(col)])
        values, first = np.unique(x, return_index=True)
        counts = np.diff(np.r_[first, len(x)])
        grids.append((values, (first + 0.5 * counts) / max(len(x), 1)))

    def transform(data: np.ndarray) -> np.ndarray:
        out = np.zeros(data.shape)
        for j, (values, cdf) in enumerate(grids):
            if len(values) == 0:
                continue
            col = data[:, j]
            ok = np.isfinite(col)
            u = np.interp(col[ok], values, cdf, left=0.0, right=1.0)
            out[ok, j] = (u - 0.5) * np.sqrt(12.0)
        return out

    return transform


def patient_vectors(train: Cohort, *others: Cohort) -> list[np.ndarray]:
    """Rank-scaled patient feature vectors of `train` and `others` (train's ranks)."""
    first, indicators = patient_features(train)
    frames = [first, *(patient_features(c)[0] for c in others)]
    values = first.columns.difference(indicators, sort=False)
    scale = rank_scaler(first[values].to_numpy(float))
    out = []
    for f in frames:
        f = f.copy()
        f[values] = scale(f[values].to_numpy(float))
        out.append(f.fillna(0.0).to_numpy(float))
    return out


def row_vectors(train: Cohort, *others: Cohort) -> list[np.ndarray]:
    """Row-level vectors: reals standardised by the training rows, levels one-hot."""
    schema = train.schema
    reals = [v.name for v in schema.variables if v.kind == "real"]
    mean = train.table[reals].mean()
    sd = train.table[reals].std().replace(0, 1.0).fillna(1.0)
    out = []
    for c in (train, *others):
        parts = [((c.table[reals] - mean) / sd).fillna(0.0).to_numpy(float)]
        for v in schema.variables:
            if v.kind != "real":
                codes = level_codes(c.table[v.name], v.levels)
                parts.append((codes[:, None] == np.arange(len(v.levels))).astype(float))
        out.append(np.hstack(parts))
    return out


def privacy_metrics(
    train: Cohort, synth: Cohort, holdout: Cohort, seed: int = 0
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Privacy metrics (see the module docstring) and the distances behind the figures."""
    rng = np.random.default_rng(seed)
    x_train, x_hold, x_synth = patient_vectors(train, holdout, synth)
    d_synth, hub_synth = nearest(x_synth, x_train)
    d_hold, hub_hold = nearest(x_hold, x_train)
    shares = dcr_shares(x_synth, x_train, x_hold, rng)
    n = min(len(x_train), len(x_hold))
    hub, hub_count = _most_common(hub_synth)
    hub_share, hub_id = hub_count / len(x_synth), patient_ids(train).tolist()[hub]
    holdout_hub_share = _most_common(hub_hold)[1] / len(x_hold)
    notes = []
    if hub_share > HUB_NOTE:
        notes.append(
            f"privacy: {hub_share:.0%} of synthetic patients have the same nearest training "
            f"patient ({hub_id}; holdout patients: {holdout_hub_share:.0%}): hubness, one "
            "patient decides the DCR share for them; read it with the copy and MIA metrics"
        )

    threshold = float(np.percentile(d_hold, 1))
    exact = int((d_synth <= EXACT).sum())
    near = int((d_synth < threshold).sum())

    member = nearest_distances(x_train, x_synth)
    non_member = nearest_distances(x_hold, x_synth)
    labels = np.r_[np.ones(len(member)), np.zeros(len(non_member))]
    mia = float(roc_auc_score(labels, -np.r_[member, non_member]))

    rows_train, rows_hold, rows_synth = (
        _sample(x, cap, rng)
        for x, cap in zip(
            row_vectors(train, holdout, synth),
            (MAX_QUERY_ROWS, MAX_QUERY_ROWS, MAX_REFERENCE_ROWS),
            strict=True,
        )
    )
    row_train = nearest_distances(rows_train, rows_synth)
    row_hold = nearest_distances(rows_hold, rows_synth)
    med_train, med_hold = float(np.median(row_train)), float(np.median(row_hold))

    metrics = {
        "patients": {"train": len(x_train), "holdout": len(x_hold), "synthetic": len(x_synth)},
        "features": x_train.shape[1],
        "dcr_share": float(np.median(shares)),
        "dcr_share_mean": float(np.mean(shares)),
        "dcr_share_range": [float(shares.min()), float(shares.max())],
        "dcr_share_draws": len(shares),
        "dcr_share_reference_size": n,
        "dcr_hub_share": hub_share,
        "dcr_hub_id": hub_id,
        "holdout_hub_share": holdout_hub_share,
        "dcr_synthetic_median": float(np.median(d_synth)),
        "dcr_holdout_median": float(np.median(d_hold)),
        "exact_copies": exact,
        "exact_copy_share": exact / len(d_synth),
        "holdout_exact_share": float(np.mean(d_hold <= EXACT)),
        "near_copy_threshold": threshold,
        "near_copies": near,
        "near_copy_share": near / len(d_synth),
        "mia_auroc": mia,
        "row_distance_median_train": med_train,
        "row_distance_median_holdout": med_hold,
        "row_distance_ratio": med_train / med_hold if med_hold > 0 else np.nan,
        "notes": notes,
    }
    distances = {
        "synthetic_to_train": d_synth,
        "holdout_to_train": d_hold,
        "train_to_synthetic": member,
        "holdout_to_synthetic": non_member,
        "train_rows_to_synthetic": row_train,
        "holdout_rows_to_synthetic": row_hold,
    }
    return metrics, distances


def dcr_shares(
    x_synth: np.ndarray, x_train: np.ndarray, x_hold: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """DCR share of each draw of equal-size train and holdout subsamples (ties count half)."""
    n = min(len(x_train), len(x_hold))
    draws = 1 if len(x_train) == len(x_hold) == n else DCR_DRAWS
    to_hold = None
    shares = np.empty(draws)
    for k in range(draws):
        ref_train = x_train[_subset(len(x_train), n, rng)]
        if to_hold is None or len(x_hold) > n:
            to_hold = nearest_distances(x_synth, x_hold[_subset(len(x_hold), n, rng)])
        to_train = nearest_distances(x_synth, ref_train)
        shares[k] = np.mean(to_train < to_hold) + 0.5 * np.mean(to_train == to_hold)
    return shares


def patient_ids(cohort: Cohort) -> np.ndarray:
    """Patient ids in the order of `patient_features` rows."""
    return pd.factorize(cohort.table[cohort.schema.id])[1].to_numpy()


def _subset(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(size) if n == size else rng.choice(size, n, replace=False)


def _most_common(index: np.ndarray) -> tuple[int, int]:
    """The most frequent value of `index` and its count."""
    counts = np.bincount(index)
    return int(counts.argmax()), int(counts.max())


def _sample(x: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= cap else x[rng.choice(len(x), cap, replace=False)]


def plot_privacy(distances: dict[str, np.ndarray]) -> Any:
    """Histograms: DCR (synthetic and holdout to train), attack distances, row distances."""
    panels = (
        ("DCR: nearest training patient", "synthetic_to_train", "holdout_to_train"),
        ("attack: nearest synthetic patient", "train_to_synthetic", "holdout_to_synthetic"),
        (
            "Health Gym: nearest synthetic row",
            "train_rows_to_synthetic",
            "holdout_rows_to_synthetic",
        ),
    )
    fig, axes = new_figure(3, ncols=3, size=(4.2, 3.0))
    for ax, (title, a, b) in zip(axes, panels, strict=True):
        top = float(np.percentile(np.r_[distances[a], distances[b]], 99)) or 1.0
        bins = np.linspace(0, top, 40)
        for key in (a, b):
            label = key.split("_to_")[0].replace("_", " ")
            ax.hist(
                np.clip(distances[key], 0, top), bins=bins, density=True, alpha=0.5, label=label
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("Euclidean distance", fontsize=8)
        ax.legend(fontsize=8)
    fig.suptitle("Distances: synthetic vs training and holdout")
    return fig
