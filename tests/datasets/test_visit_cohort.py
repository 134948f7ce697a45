"""The development cohorts: the bundled visit cohort (and its rebuild from set A), the
variable-length demo."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.datasets import visit_cohort
from healthgym.datasets.__main__ import main

SET_A = Path(
    os.environ.get(
        "HEALTHGYM_SET_A",
        Path(__file__).resolve().parents[3] / "shared/data/physionet2012/set-a.csv.gz",
    )
)


def test_bundled_visit_cohort_is_a_small_irregular_cohort():
    c = hg.datasets.visits()
    t, s = c.table, c.schema
    assert len(c.ids) == 250 and c.lengths.between(1, 16).all() and c.lengths.nunique() > 8
    days = s["days"]
    assert (days.monotone, days.start, days.min, days.max) == ("increasing", 0, 0, 2)
    assert (t.groupby("RecordID")["days"].first() == 0).all()
    assert (t.groupby("RecordID")["days"].diff().dropna() > 0).all()  # visits > 1 h apart
    labs = t[visit_cohort.LABS]
    assert 0.3 < labs.isna().mean().mean() < 0.5  # the gaps are kept
    assert [v.name for v in s.static] == visit_cohort.STATICS
    # inference finds the time-like variable by itself
    inferred = hg.infer_schema(t, "RecordID", "visit")
    assert (inferred["days"].monotone, inferred["days"].start) == ("increasing", 0)


def test_variable_length_demo_and_the_development_set():
    v = hg.datasets.variable_length()
    assert len(v.ids) == 400 and v.lengths.min() == 1 and v.lengths.max() == 12
    again = hg.datasets.variable_length()
    pd.testing.assert_frame_equal(v.table, again.table)
    cohorts = hg.datasets.development()
    assert list(cohorts) == ["demo", "variable_length", "visits"]


def test_visits_are_merged_within_the_window():
    ids = np.array([1, 1, 1, 1, 2, 2])
    minutes = np.array([0, 30, 61, 200, 500, 500])
    visit, opened = visit_cohort._visits(ids, minutes, 60)
    assert visit.tolist() == [0, 0, 1, 2, 0, 0]
    assert opened.tolist() == [0, 0, 61, 200, 500, 500]


@pytest.mark.skipif(not SET_A.exists(), reason=f"{SET_A} not available")
def test_rebuilt_from_set_a_equals_the_bundled_file(tmp_path):
    main(["--cohort", "visits", "--source", str(SET_A), "--out", str(tmp_path)])
    rebuilt = hg.Cohort.from_parquet(tmp_path / visit_cohort.TABLE, tmp_path / visit_cohort.SCHEMA)
    bundled = hg.datasets.visits()
    assert rebuilt.schema == bundled.schema
    pd.testing.assert_frame_equal(rebuilt.table, bundled.table)
