"""Trajectory metrics: persistence, within-patient dynamics, step changes, time-like variables.

Each metric must be small for real unseen patients and large for a cohort broken in the way
it is meant to catch."""

import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.evaluation import READINGS, temporal

KEYS = [
    "temporal.lag1_gap_mean",
    "temporal.lagk_gap_mean",
    "temporal.within_lag1_gap_mean",
    "temporal.delta_ks_mean",
    "temporal.never_change_gap_mean",
    "temporal.every_change_gap_mean",
    "temporal.backwards_share",
    "temporal.start_mismatch_share",
    "temporal.lag1_gap_excess",
    "temporal.within_lag1_gap_excess",
]


@pytest.fixture(scope="module")
def parts():
    """Two disjoint 400-patient parts of the real demo cohort: 'training' and holdout."""
    c = hg.datasets.demo()
    ids = np.random.default_rng(0).permutation(c.ids)
    return c.subset(ids[:400]), c.subset(ids[400:800])


def like(cohort: hg.Cohort, table: pd.DataFrame) -> hg.Cohort:
    return hg.Cohort(table, cohort.schema, strict=False)


def shuffled_steps(cohort: hg.Cohort, seed: int = 0) -> hg.Cohort:
    """Each dynamic variable's values permuted across the steps of each patient: the same
    values and patients, no order in time."""
    table, schema = cohort.table.copy(), cohort.schema
    rng = np.random.default_rng(seed)
    lengths = cohort.lengths.to_numpy()
    starts = np.cumsum(lengths) - lengths
    for v in schema.dynamic:
        order = [s + rng.permutation(n) for s, n in zip(starts, lengths, strict=True)]
        order = np.concatenate(order)
        table[v.name] = table[v.name].to_numpy()[order]
    return like(cohort, table)


def test_summary_keys_are_registered():
    assert set(KEYS) <= set(READINGS)


def test_holdout_is_close_and_shuffled_steps_are_far(parts):
    train, holdout = parts
    real = temporal.temporal_metrics(train, holdout)
    for key, limit in [
        ("lag1_gap_mean", 0.03),
        ("lagk_gap_mean", 0.03),
        ("within_lag1_gap_mean", 0.06),
        ("delta_ks_mean", 0.05),
        ("never_change_gap_mean", 0.02),
        ("every_change_gap_mean", 0.04),
    ]:
        assert real[key] < limit, key
    broken = temporal.temporal_metrics(train, shuffled_steps(holdout))
    assert broken["lag1_gap_mean"] > 0.1 and broken["within_lag1_gap_mean"] > 0.3
    assert broken["delta_ks_mean"] > 0.06
    hr = broken["trajectories"]["HR"]
    assert hr["lag1"]["real"] > 0.8 and hr["within_lag1"]["synthetic"] < 0.0
    assert real["backwards_share"] is None and real["start_mismatch_share"] is None


def test_pooled_autocorrelation_is_pearson_of_lagged_pairs():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(50, 6)), axis=1)
    x[rng.random(x.shape) < 0.2] = np.nan
    a, b = x[:, :-2].ravel(), x[:, 2:].ravel()
    m = np.isfinite(a) & np.isfinite(b)
    assert temporal.pooled_autocorrelation(x, 2) == pytest.approx(np.corrcoef(a[m], b[m])[0, 1])
    u = temporal.rank_scale(x, np.array([-1e9, np.nanmedian(x), 1e9, np.nan]))
    assert u[0] == 0 and u[1] == pytest.approx(0.5, abs=0.01) and u[2] == 1 and np.isnan(u[3])


def test_frozen_and_jittery_patients_are_caught(parts):
    train, holdout = parts
    table, schema = holdout.table.copy(), holdout.schema
    reals = [v.name for v in schema.dynamic if v.kind == "real"]
    frozen = table.copy()
    frozen[reals] = frozen.groupby(schema.id)[reals].transform("first")  # never change
    t = temporal.temporal_metrics(train, like(holdout, frozen))
    assert t["never_change_gap_mean"] > 0.3
    assert t["trajectories"]["HR"]["never_change"]["synthetic"] == 1
    jitter = table.copy()  # the weight, which mostly persists, moves at every step
    rng = np.random.default_rng(0)
    jitter["Weight"] += rng.normal(0, 1, len(jitter))
    t = temporal.temporal_metrics(train, like(holdout, jitter))
    weight = t["trajectories"]["Weight"]["every_change"]
    assert weight["real"] < 0.5 and weight["synthetic"] == 1
    assert t["trajectories"]["Weight"]["delta_ks"] > 0.3


def visits(n: int = 80, seed: int = 0, back: float = 0.0, late: float = 0.0) -> pd.DataFrame:
    """Irregular visits with `day` since the first visit; `back` is the share of visits whose
    day goes back, `late` the share of patients not starting at day 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        day = 0.0 if rng.random() >= late else 1.0
        level = rng.normal(1.0, 0.3)
        for t in range(int(rng.integers(2, 9))):
            if t:
                day += rng.uniform(0.5, 30) * (-1 if rng.random() < back else 1)
            rows.append((p, t, day, level + rng.normal(0, 0.05)))
    return pd.DataFrame(rows, columns=["pid", "t", "day", "creatinine"])


def test_time_like_variables_going_back_or_starting_late():
    real = hg.Cohort(visits(), id="pid", time="t")
    assert (real.schema["day"].monotone, real.schema["day"].start) == ("increasing", 0)
    plain = hg.infer_schema(visits(), "pid", "t").with_overrides(day={"monotone": None})
    plain = plain.with_overrides(day={"start": None})
    for schema in (real.schema, plain):  # declared, or found in the real data
        r = hg.Cohort(real.table, schema)
        synth = hg.Cohort(visits(seed=1, back=0.2, late=0.3), schema, strict=False)
        t = temporal.temporal_metrics(r, synth)
        assert t["time_like"] == {"monotone": {"day": "increasing"}, "start": {"day": 0.0}}
        assert 0.1 < t["backwards_share"] < 0.3
        assert 0.15 < t["start_mismatch_share"] < 0.45
        same = temporal.temporal_metrics(r, hg.Cohort(visits(seed=2), schema))
        assert same["backwards_share"] == 0 and same["start_mismatch_share"] == 0


def test_report_has_the_rows_and_figures(parts):
    train, holdout = parts
    r = hg.evaluate(train, shuffled_steps(holdout), holdout=holdout)
    assert r.value("temporal.lag1_gap_excess") > 0.1
    assert r.metrics["temporal"]["reference"]["lag1_gap_mean"] < 0.03
    rows = r.summary.set_index("key")
    assert rows.loc["temporal.within_lag1_gap_mean", "reading"] == "poor"
    assert {"autocorrelation", "patient_trajectories"} <= set(r.figures)
    same = hg.evaluate(train, holdout, holdout=holdout)
    assert same.value("temporal.lag1_gap_excess") == 0
    assert same.value("temporal.within_lag1_gap_excess") == 0
