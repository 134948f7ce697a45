"""The report's row-kind section: the real holdout reads good, a generator that mixes the
kinds of rows reads poor, on ground-truth cohorts (oral dosing records; stays ending in one
outcome row) and on the demo cohort."""

from __future__ import annotations

import numpy as np
import pytest

import healthgym as hg
from healthgym.datasets.pk_oral import SCHEMA as PK_SCHEMA
from healthgym.datasets.pk_oral import concentration, pk_oral
from healthgym.evaluation import READINGS
from healthgym.evaluation.row_kinds import patterns, row_kind_metrics
from helpers import outcome_stays

ROWS = ("unseen_pattern_share", "never_together_share", "terminal_misplaced_share",
        "per_kind_ks_gap_excess")  # fmt: skip


def reading(metrics: dict, key: str) -> str:
    return READINGS[f"row_kinds.{key}"].grade(metrics[key])


def mixed(cohort: hg.Cohort, seed: int = 0) -> hg.Cohort:
    """Each dynamic column shuffled across rows: every pooled marginal kept, kinds mixed."""
    rng = np.random.default_rng(seed)
    table = cohort.table.copy()
    for v in cohort.schema.dynamic:
        if v.monotone is None:
            table[v.name] = table[v.name].to_numpy()[rng.permutation(len(table))]
    return hg.Cohort(table, cohort.schema, strict=False)


def test_the_pk_model_is_the_bateman_function() -> None:
    """One dose: C(t) = F D ka / (V (ka - ke)) (e^-ke t - e^-ka t); two doses superpose."""
    t = np.array([0.0, 1.0, 5.0])
    one = concentration(t, [(0.0, 100.0)], cl=5.0, v=50.0, ka=1.2)
    ke = 0.1
    expected = 0.9 * 100 * 1.2 / (50 * (1.2 - ke)) * (np.exp(-ke * t) - np.exp(-1.2 * t))
    np.testing.assert_allclose(one, expected)
    two = concentration(t, [(0.0, 100.0), (1.0, 100.0)], cl=5.0, v=50.0, ka=1.2)
    np.testing.assert_allclose(two, one + concentration(t - 1.0, [(0.0, 100.0)], 5.0, 50.0, 1.2))
    table = pk_oral(50).table
    assert not (table["DOSE"].notna() & table["CONC"].notna()).any()  # never mixed
    assert list(PK_SCHEMA.names) == ["WT", "AGE", "SEX", "TIME", "DOSE", "CONC"]


def test_dosing_records_the_holdout_reads_good_a_mixer_poor() -> None:
    train, holdout = pk_oral(400, seed=1).split(holdout=0.5, seed=0)
    fair = row_kind_metrics(train, holdout, holdout)
    assert all(reading(fair, k) == "good" for k in ROWS), {k: fair[k] for k in ROWS}
    assert "DOSE & CONC" in fair["exclusive_pairs"]
    bad = row_kind_metrics(train, mixed(train), holdout)
    assert reading(bad, "unseen_pattern_share") == "poor"
    assert reading(bad, "never_together_share") == "poor"
    assert bad["never_together_share"] > 0.1  # rows with a dose and a concentration
    pooled = hg.evaluate(train, mixed(train)).metrics["marginals"]["ks_complement_mean"]
    assert pooled > 0.95  # what the pooled marginals saw: nothing wrong


def test_outcome_rows_the_holdout_reads_good_misplaced_outcomes_poor() -> None:
    train, holdout = outcome_stays(1200, seed=2).split(holdout=0.5, seed=0)
    fair = row_kind_metrics(train, holdout, holdout)
    assert all(reading(fair, k) == "good" for k in ROWS), {k: fair[k] for k in ROWS}
    assert set(fair["terminal_patterns"].values()) == {"last"}
    assert "survived=1 & died=1" in fair["exclusive_pairs"]
    # outcome rows moved off the end: each stay's rows in reverse order
    table = train.table.copy()
    table["t"] = table.groupby("pid")["t"].transform(lambda t: t.max() - t)
    table = table.sort_values(["pid", "t"])
    early = hg.Cohort(table, train.schema, strict=False)
    assert reading(row_kind_metrics(train, early, holdout), "terminal_misplaced_share") == "poor"
    assert reading(row_kind_metrics(train, mixed(train), holdout), "never_together_share") == "poor"


@pytest.mark.parametrize("seed", [0, 1])
def test_the_demo_holdout_reads_good(seed: int) -> None:
    train, holdout = hg.datasets.demo().split(holdout=0.2, seed=seed)
    fair = row_kind_metrics(train, holdout, holdout)
    assert all(reading(fair, k) == "good" for k in ROWS), {k: fair[k] for k in ROWS}
    assert "RespRate & MechVent=1" in fair["exclusive_pairs"]  # charted only off the ventilator


def test_the_report_shows_the_section() -> None:
    train, holdout = outcome_stays(200, seed=3).split(holdout=0.5, seed=0)
    report = hg.evaluate(train, mixed(train), holdout=holdout)
    rows = set(report.summary["key"])
    assert {f"row_kinds.{k}" for k in ROWS} <= rows and "row_patterns" in report.figures
    last = train.table.groupby("pid").cumcount(ascending=False).to_numpy() == 0
    assert set(patterns(train)[last]) == {"survived=1, died=0", "survived=0, died=1"}
