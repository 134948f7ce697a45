import numpy as np
import pandas as pd
import pytest

from healthgym import Cohort, infer_schema


@pytest.fixture
def cohort(table):
    return Cohort(table, id="pid", time="hour")


def test_construction_normalises(cohort, table):
    assert len(cohort) == 6
    assert list(cohort.table.columns) == list(table.columns)
    assert cohort.table["gcs"].map(type).eq(int).all()
    assert cohort.lengths.sum() == len(table)
    assert "6 patients" in repr(cohort)


def test_csv_and_parquet_round_trip(tmp_path, cohort):
    for name in ("c.csv", "c.parquet"):
        path = cohort.to_file(tmp_path / name)
        back = Cohort.from_file(path, cohort.schema)
        pd.testing.assert_frame_equal(back.table, cohort.table)
    assert not list(tmp_path.glob("*.tmp"))


def test_schema_file_is_accepted(tmp_path, cohort):
    cohort.schema.to_yaml(tmp_path / "s.yaml")
    cohort.to_csv(tmp_path / "c.csv")
    assert Cohort.from_csv(tmp_path / "c.csv", tmp_path / "s.yaml").schema == cohort.schema


def test_split_by_patient(cohort):
    train, hold = cohort.split(holdout=0.34, seed=1)
    assert len(train) + len(hold) == len(cohort) and len(hold) == 2
    assert not set(train.ids) & set(hold.ids)
    again, _ = cohort.split(holdout=0.34, seed=1)
    assert list(again.ids) == list(train.ids)
    with pytest.raises(ValueError, match="holdout must be a fraction in"):
        cohort.split(holdout=2)


def test_summary_and_static_table(cohort):
    s = cohort.summary()
    assert s.loc["lactate", "missing"] > 0 and s.loc["hr", "missing"] == 0
    assert s.loc["unit", "levels"] == 3
    st = cohort.static_table()
    assert len(st) == 6 and list(st.columns) == ["pid", "sex", "unit", "age"]


def _bad(table, **changes):
    t = table.copy()
    for col, (row, value) in changes.items():
        t.loc[row, col] = value
    return t


def test_bad_inputs_have_exact_errors(table):
    schema = infer_schema(table, "pid", "hour")
    cases = [
        (table.iloc[:0], "the table is empty (no rows)"),
        (pd.concat([table.iloc[:1], table]), "duplicate (pid, hour) pairs: 1 rows, first (100, 0)"),
        (
            _bad(table.astype({"hour": float}), hour=(1, 1.5)),
            "time column 'hour' must hold integer steps; non-integer",
        ),
        (
            table.iloc[[1, 0, *range(2, len(table))]],
            "time column 'hour' is not sorted within patient 100",
        ),
        (table.drop(index=1), "time column 'hour' skips steps within patient 100"),
        (_bad(table, unit=(0, "PICU")), "column 'unit' has unknown levels ['PICU']"),
        (
            _bad(table, hr=(3, np.nan)),
            "column 'hr' has 1 missing values but its schema says missing: none",
        ),
        (table.assign(lactate=np.nan), "column 'lactate' is entirely missing (all NaN)"),
        (table.assign(hr="fast"), "column 'hr' is real but holds non-numbers ['fast'] (1 in all)"),
        (
            _bad(table, sex=(1, "Male" if table.sex[0] == "Female" else "Female")),
            "static column 'sex' changes within patients [100]",
        ),
        (table.drop(columns="vent"), "columns missing from the table: ['vent']"),
        (table.assign(extra=1), "columns not in the schema: ['extra']"),
        (
            _bad(table, lactate=(0, -2.0)),
            "column 'lactate' uses boxcox but has negative values [-2.0]",
        ),
        (
            pd.concat(
                [
                    table[table.pid == 101],
                    table[table.pid == 100],
                    table[table.pid == 101].assign(hour=lambda d: d.hour + 10),
                ]
            ),
            "rows of a patient are not contiguous in column 'pid'",
        ),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError) as err:
            Cohort(bad.reset_index(drop=True), schema)
        assert message in str(err.value), (message, str(err.value))


def test_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="missing.csv: file not found"):
        Cohort.from_csv(tmp_path / "missing.csv", id="a", time="b")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="bad.parquet: cannot read as a table"):
        Cohort.from_parquet(bad, id="a", time="b")


def test_failed_write_keeps_the_previous_file(tmp_path, cohort, monkeypatch):
    path = cohort.to_csv(tmp_path / "c.csv")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        cohort.to_csv(path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*tmp"))
