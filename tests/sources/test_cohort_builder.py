"""`healthgym cohort`: the demo cohort back from an OMOP CDM (DuckDB and PostgreSQL), the
MIMIC-IV hypotension definition on a hand-made MIMIC-IV folder, and bad definitions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pg_server import load_tables, postgres_bin, postgres_server

import healthgym as hg
from healthgym.data.cohort import Cohort
from healthgym.data.schema import Schema
from healthgym.sources import build_cohort, example_definition, parse_definition
from healthgym.sources.demo_cdm import cdm_tables, write_demo_cdm
from helpers import one_line_error, run

TEXT = ("Gender", "ICUType")


@pytest.fixture(scope="module")
def cdm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_cdm(tmp_path_factory.mktemp("cdm") / "cdm.duckdb")


def assert_demo(table: pd.DataFrame) -> None:
    """`table` is the bundled demo cohort: same columns, rows and values."""
    demo = hg.datasets.demo().table
    assert list(table.columns) == list(demo.columns)
    assert len(table) == len(demo)
    for c in demo.columns:
        if c in TEXT:
            assert table[c].fillna("?").tolist() == demo[c].fillna("?").tolist(), c
        else:
            real = pd.to_numeric(demo[c], errors="coerce").to_numpy(float)
            built = pd.to_numeric(table[c], errors="coerce").to_numpy(float)
            np.testing.assert_allclose(built, real, rtol=1e-12, err_msg=c)


def test_the_demo_cohort_comes_back_from_its_omop_cdm(cdm: Path, tmp_path: Path) -> None:
    (tmp_path / "icu.yaml").write_text(run("cohort", "--example", "omop-icu-demo").output)
    out = tmp_path / "demo.parquet"
    r = run("cohort", tmp_path / "icu.yaml", "--db", f"duckdb:///{cdm}", "-o", out)
    assert r.exit_code == 0, r.output
    assert "4000 stays (48000 rows, 16 variables)" in r.output
    table = pd.read_parquet(out)
    assert_demo(table)
    schema = Schema.from_yaml(tmp_path / "demo.schema.yaml")
    demo = hg.datasets.demo().schema
    assert [(v.name, v.kind, v.role) for v in schema.variables] == [
        (v.name, v.kind, v.role) for v in demo.variables
    ]
    assert schema["GCS"].levels == list(range(3, 16)) and schema["Gender"].missing == "flag"
    assert len(Cohort(table, schema).lengths) == 4000  # trains as it stands
    # small batches stream the same table
    again = build_cohort(
        parse_definition(yaml.safe_load(example_definition("omop-icu-demo"))),
        f"duckdb:///{cdm}",
        tmp_path / "again.parquet",
        batch_rows=1000,
    )
    pd.testing.assert_frame_equal(pd.read_parquet(again.path), table)


def test_the_demo_cohort_comes_back_from_postgresql(tmp_path: Path) -> None:
    if postgres_bin() is None:
        if os.environ.get("HEALTHGYM_POSTGRES_TEST") == "required":
            pytest.fail("HEALTHGYM_POSTGRES_TEST=required but no PostgreSQL server (initdb)")
        pytest.skip("no PostgreSQL server binaries (.ci/run installs Debian's postgresql)")
    definition = yaml.safe_load(example_definition("omop-icu-demo")) | {"schema": "cdm"}
    (tmp_path / "icu.yaml").write_text(yaml.safe_dump(definition))
    with postgres_server() as url:
        load_tables(url, cdm_tables(hg.datasets.demo()), schema="cdm")
        out = tmp_path / "demo.parquet"
        r = run("cohort", tmp_path / "icu.yaml", "--db", url, "-o", out)
        assert r.exit_code == 0, r.output
        assert_demo(pd.read_parquet(out))
        bad = run(
            "cohort",
            tmp_path / "icu.yaml",
            "--db",
            url.replace("/postgres", "/nodb"),
            "-o",
            tmp_path / "x.parquet",
        )
        one_line_error(bad, "cannot connect", "nodb")


def _mimic_folder(root: Path) -> Path:
    """Two ICU stays in MIMIC-IV's layout (hosp/, icu/ CSV files), every hypotension item."""
    (root / "hosp").mkdir(parents=True)
    (root / "icu").mkdir()
    t = pd.Timestamp("2150-01-01")
    h = pd.Timedelta(hours=1)
    pd.DataFrame(
        {
            "stay_id": [1, 2],
            "subject_id": [10, 20],
            "hadm_id": [100, 200],
            "intime": [t, t + 744 * h],
            "outtime": [t + 10 * h, t + 840 * h],
            "first_careunit": ["MICU", "SICU"],
        }
    ).to_csv(root / "icu/icustays.csv", index=False)
    pd.DataFrame(
        {
            "subject_id": [10, 20],
            "gender": ["F", "M"],
            "anchor_age": [60, 70],
            "anchor_year": [2150, 2148],
        }
    ).to_csv(root / "hosp/patients.csv", index=False)
    pd.DataFrame(
        {"hadm_id": [100, 200], "hospital_expire_flag": [1, 0], "deathtime": [t + 10 * h, pd.NaT]}
    ).to_csv(root / "hosp/admissions.csv", index=False)
    s2 = t + 744 * h
    chart = [  # stay, item, time, value, unit
        (1, 220052, t + 10 * pd.Timedelta(minutes=1), 60.0, "mmHg"),
        (1, 220181, t + 40 * pd.Timedelta(minutes=1), 70.0, "mmHg"),
        (1, 220052, t + 1.5 * h, 500.0, "mmHg"),  # outside MAP's range: dropped
        (1, 223901, t + 2 * h, 6.0, None),
        (1, 223901, t + 2.5 * h, 4.0, None),
        (2, 220052, s2 + 47.5 * h, 80.0, "mmHg"),
        (2, 220052, s2 + 48.2 * h, 90.0, "mmHg"),  # after the window
        (2, 220051, s2, 50.0, "mmHg"),
        (2, 220050, s2, 110.0, "mmHg"),
        (2, 220644, s2, 30.0, "IU/L"),
        (2, 220587, s2, 40.0, "IU/L"),
        (2, 220224, s2, 90.0, "mmHg"),
        (2, 225668, s2, 2.0, "mmol/L"),
        (2, 220615, s2, 1.1, "mg/dL"),
        (2, 223835, s2, 40.0, None),
        (2, 223901, s2, 5.0, None),
    ]
    pd.DataFrame(chart, columns=["stay_id", "itemid", "charttime", "valuenum", "valueuom"]).to_csv(
        root / "icu/chartevents.csv", index=False
    )
    pd.DataFrame(
        {
            "stay_id": [1, 1],
            "itemid": [226559, 226560],
            "charttime": [t + 3 * h, t + 3.5 * h],
            "value": [100.0, 50.0],
            "valueuom": ["mL", "mL"],
        }
    ).to_csv(root / "icu/outputevents.csv", index=False)
    pd.DataFrame(
        {
            "stay_id": [1, 1],
            "itemid": [225158, 221906],
            "starttime": [t + 4.5 * h, t + 1 * h],
            "endtime": [t + 6.5 * h, t + 3 * h],
            "amount": [200.0, 2.0],
            "amountuom": ["mL", "mg"],
        }
    ).to_csv(root / "icu/inputevents.csv", index=False)
    return root


def test_the_mimic_iv_hypotension_definition(tmp_path: Path) -> None:
    folder = _mimic_folder(tmp_path / "mimic")
    (tmp_path / "hypo.yaml").write_text(run("cohort", "--example", "mimic-iv-hypotension").output)
    out = tmp_path / "hypo.parquet"
    r = run("cohort", tmp_path / "hypo.yaml", "--db", f"duckdb:///{folder}", "-o", out)
    assert r.exit_code == 0, r.output
    t = pd.read_parquet(out).set_index(["stay_id", "hour"])
    assert t.loc[1].index.tolist() == list(range(10)) and t.loc[2].index.tolist() == list(range(48))
    one, two = t.loc[1], t.loc[2]
    assert one["MAP"].iloc[0] == 65.0 and np.isnan(one["MAP"].iloc[1])  # mean; 500 out of range
    assert one["GCS_motor"].iloc[2] == 4.0  # min of the hour
    assert one["Urine"].iloc[3] == 150.0  # sum
    assert one["Fluids"].tolist() == [0, 0, 0, 0, 50, 100, 50, 0, 0, 0]  # pro-rated, 0 when none
    assert one["Vasopressor"].tolist() == [0, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # running in the hour
    assert one["Norepinephrine"].tolist()[:4] == [0, 1, 1, 0]
    assert two["MAP"].iloc[47] == 80.0 and two["MAP"].notna().sum() == 1
    assert (one["Age"].iloc[0], one["Gender"].iloc[0], one["died_in_hospital"].iloc[0]) == (
        60,
        "Female",
        1,
    )
    assert (two["Age"].iloc[0], two["Gender"].iloc[0], two["died_in_hospital"].iloc[0]) == (
        72,
        "Male",
        0,
    )
    schema = Schema.from_yaml(tmp_path / "hypo.schema.yaml")
    assert [v.name for v in schema.actions] == ["Fluids", "Vasopressor"]


def _definition(tmp_path: Path, **changes: object) -> Path:
    d = yaml.safe_load(example_definition("omop-icu-demo"))
    for key, value in changes.items():
        if key == "variable":
            d["variables"] = [value]
        else:
            d[key] = value
    path = tmp_path / "def.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


HR = {"name": "HR", "domain": "measurement", "concepts": [3027018], "agg": "mean"}


@pytest.mark.parametrize(
    "changes, fragments",
    [
        ({"schema": "nowhere"}, ("table nowhere.visit_occurrence", "not in the database")),
        ({"variable": HR | {"concepts": [123]}}, ("variable 'HR'", "no measurement rows", "123")),
        ({"variable": HR | {"concepts": [3027018, 3004249]}}, ("mixes units 8541, 8876",)),
        ({"step": "3d"}, ("step (3d) is longer than the window (48h)",)),
        ({"step": "4 hours"}, ("step must be a duration",)),
        ({"variable": HR | {"agg": "median"}}, ("agg must be one of",)),
        ({"variable": HR | {"domain": "notes"}}, ("domain must be one of",)),
        ({"stay": {"table": "visit_occurrence", "concepts": [9999]}}, ("no stays", "9999")),
        ({"variable": HR | {"name": "Age"}}, ("used twice", "Age")),
        ({"extra": 1}, ("unknown keys ['extra']",)),
    ],
)
def test_bad_definitions_get_one_line_and_nothing_written(
    cdm: Path, tmp_path: Path, changes: dict[str, object], fragments: tuple[str, ...]
) -> None:
    out = tmp_path / "out.parquet"
    r = run("cohort", _definition(tmp_path, **changes), "--db", f"duckdb:///{cdm}", "-o", out)
    one_line_error(r, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["def.yaml"]


def test_the_database_is_never_written_and_outputs_are_not_replaced(
    cdm: Path, tmp_path: Path
) -> None:
    before = cdm.read_bytes()
    definition = _definition(tmp_path)
    out = tmp_path / "out.parquet"
    assert run("cohort", definition, "--db", f"duckdb:///{cdm}", "-o", out).exit_code == 0
    written = out.read_bytes()
    again = run("cohort", definition, "--db", f"duckdb:///{cdm}", "-o", out)
    one_line_error(again, "exists", "--overwrite")
    assert out.read_bytes() == written and cdm.read_bytes() == before
    one_line_error(
        run("cohort", definition, "--db", "mysql://x/y", "-o", tmp_path / "b.parquet"),
        "give duckdb:///",
    )
    one_line_error(
        run("cohort", definition, "--db", f"duckdb:///{cdm}", "-o", tmp_path / "b.csv"), "Parquet"
    )


def test_duckdb_settings_in_the_url(cdm: Path, tmp_path: Path) -> None:
    definition = _definition(tmp_path)
    capped = run("cohort", definition, "--db", f"duckdb:///{cdm}?memory_limit=300MB&threads=1",
                 "-o", tmp_path / "capped.parquet")  # fmt: skip
    assert capped.exit_code == 0, capped.output
    assert_demo(pd.read_parquet(tmp_path / "capped.parquet"))
    bad = run(
        "cohort", definition, "--db", f"duckdb:///{cdm}?cache=1", "-o", tmp_path / "b.parquet"
    )
    one_line_error(bad, "unknown DuckDB settings ['cache']")
