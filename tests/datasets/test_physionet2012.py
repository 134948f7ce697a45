"""PhysioNet 2012 loader on hand-made records in all three layouts, and the bundled demo."""

from __future__ import annotations

import gzip
import math
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthgym import Encoder
from healthgym.datasets import demo, physionet2012, read_physionet2012_long
from healthgym.datasets.__main__ import main
from healthgym.datasets.demo_data import VARIABLES as DEMO_VARIABLES
from healthgym.datasets.demo_data import build_demo

# The development copy of set A lives beside the checkout; HEALTHGYM_SET_A points elsewhere.
SET_A = Path(
    os.environ.get(
        "HEALTHGYM_SET_A",
        Path(__file__).resolve().parents[3] / "shared/data/physionet2012/set-a.csv.gz",
    )
)

# Hand-made stays (not real data), as the challenge's per-record files.
RECORDS = {
    1001: """Time,Parameter,Value
00:00,RecordID,1001
00:00,Age,70
00:00,Gender,1
00:00,Height,180
00:00,ICUType,2
00:00,Weight,80
00:10,HR,80
00:20,SysABP,120
00:30,NISysABP,100
00:30,Urine,50
00:45,Urine,30
00:50,HR,90
01:10,NISysABP,110
01:30,MechVent,1
01:40,NISysABP,130
02:00,GCS,10
02:30,GCS,8
02:40,Temp,-17.8
03:00,Temp,37.5
48:00,HR,100
""",
    1002: """Time,Parameter,Value
00:00,RecordID,1002
00:00,Age,50
00:00,Gender,0
00:00,Height,-1
00:00,ICUType,3
00:00,Weight,-1
00:05,HR,70
00:05,NIMAP,70
00:06,MAP,60
05:00,Weight,0
05:00,Urine,0
47:59,Weight,72.5
""",
    1003: """Time,Parameter,Value
00:00,RecordID,1003
00:00,Age,90
00:00,Gender,-1
00:00,Height,165.1
00:00,ICUType,4
00:00,Weight,61
00:30,GCS,15
01:00,HR,110
01:00,MAP,85
01:00,SysABP,130
03:59,Temp,36.9
""",
}
OUTCOMES = """RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death
1001,10,5,7,6,1
1002,12,3,9,-1,0
1003,20,8,4,-1,0
"""


def _long_csv(records: dict[int, str]) -> str:
    lines = ["RecordID,Time,Parameter,Value"]
    for rid, text in records.items():
        lines += [f"{rid},{row}" for row in text.strip().splitlines()[1:]]
    return "\n".join(lines) + "\n"


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    """The same stays as a long .csv, a long .csv.gz, a folder of .txt and a .tar.gz."""
    (tmp_path / "Outcomes-a.txt").write_text(OUTCOMES)
    folder = tmp_path / "set-a"
    folder.mkdir()
    for rid, text in RECORDS.items():
        (folder / f"{rid}.txt").write_text(text)
    with tarfile.open(tmp_path / "set-a.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="set-a")
    (tmp_path / "set-a.csv").write_text(_long_csv(RECORDS))
    with gzip.open(tmp_path / "set-a.csv.gz", "wt") as f:
        f.write(_long_csv(RECORDS))
    names = ("set-a.csv", "set-a.csv.gz", "set-a", "set-a.tar.gz")
    return {name: tmp_path / name for name in names}


def _cell(cohort, rid: int, step: int, name: str):
    t = cohort.table
    return t.loc[(t["RecordID"] == rid) & (t["step"] == step), name].item()


def test_raw_readings_agree_across_layouts(sources: dict[str, Path]) -> None:
    frames = [read_physionet2012_long(p) for p in sources.values()]
    for f in frames:
        f["Parameter"] = f["Parameter"].astype(str)
        pd.testing.assert_frame_equal(f, frames[0])
    raw = frames[0]
    assert list(raw.columns) == ["RecordID", "minutes", "Parameter", "Value"]
    assert "RecordID" not in set(raw["Parameter"])
    assert len(raw) == sum(t.count("\n") - 2 for t in RECORDS.values())
    last = raw[raw["RecordID"] == 1001].iloc[-1]
    assert (last["minutes"], last["Parameter"], last["Value"]) == (2880, "HR", 100.0)


def test_same_cohort_from_every_layout(sources: dict[str, Path]) -> None:
    cohorts = [physionet2012(p) for p in sources.values()]
    for c in cohorts[1:]:
        pd.testing.assert_frame_equal(c.table, cohorts[0].table)
        assert c.schema == cohorts[0].schema


def test_grid_and_aggregation(sources: dict[str, Path]) -> None:
    c = physionet2012(sources["set-a.csv"])
    t = c.table
    assert list(t.columns[:2]) == ["RecordID", "step"]
    assert (t.groupby("RecordID")["step"].apply(list) == [list(range(48))] * 3).all()
    assert _cell(c, 1001, 0, "HR") == 85.0  # mean of 80 and 90
    assert _cell(c, 1001, 47, "HR") == 100.0  # 48:00 joins the last step
    assert _cell(c, 1001, 0, "Urine") == 80.0  # sum of 50 and 30
    assert _cell(c, 1002, 5, "Urine") == 0.0  # anuria is a reading
    assert math.isnan(_cell(c, 1001, 1, "Urine"))  # no reading is not zero output
    assert _cell(c, 1001, 2, "GCS") == 8  # worst score in the step
    vent = t.loc[t["RecordID"] == 1001, "MechVent"].tolist()
    assert vent == [0, 1] + [0] * 46  # absent = not charted as ventilated
    assert _cell(c, 1003, 3, "Temp") == 36.9  # 03:59 is still step 3


def test_coarse_steps_and_shorter_window(sources: dict[str, Path]) -> None:
    c4 = physionet2012(sources["set-a.csv"], step_hours=4)
    assert c4.lengths.tolist() == [12] * 3
    assert _cell(c4, 1001, 0, "HR") == 85.0
    assert _cell(c4, 1001, 11, "HR") == 100.0
    assert _cell(c4, 1001, 0, "MechVent") == 1
    c2 = physionet2012(sources["set-a.csv"], hours=2)
    assert c2.lengths.tolist() == [2] * 3
    assert _cell(c2, 1001, 0, "HR") == 85.0
    assert math.isnan(_cell(c2, 1001, 1, "HR"))  # the 48:00 reading is outside the window
    with pytest.raises(ValueError, match="multiple of step_hours"):
        physionet2012(sources["set-a.csv"], hours=48, step_hours=5)


def test_blood_pressure_prefers_invasive(sources: dict[str, Path]) -> None:
    c = physionet2012(sources["set-a.csv"])
    assert _cell(c, 1001, 0, "SysABP") == 120.0  # arterial 120 beats cuff 100
    assert _cell(c, 1001, 1, "SysABP") == 120.0  # cuff only: mean of 110 and 130
    assert _cell(c, 1002, 0, "MAP") == 60.0
    assert _cell(c, 1003, 1, "MAP") == 85.0
    assert not {"NISysABP", "NIDiasABP", "NIMAP"} & set(c.table.columns)


def test_unrecorded_and_impossible_values_are_missing(sources: dict[str, Path]) -> None:
    c = physionet2012(sources["set-a.csv"])
    assert math.isnan(_cell(c, 1002, 0, "Height"))  # -1
    assert pd.isna(_cell(c, 1003, 0, "Gender"))  # -1
    assert math.isnan(_cell(c, 1002, 0, "Weight"))  # -1
    assert math.isnan(_cell(c, 1002, 5, "Weight"))  # 0 kg
    assert _cell(c, 1002, 47, "Weight") == 72.5
    assert math.isnan(_cell(c, 1001, 2, "Temp"))  # -17.8 degC
    assert _cell(c, 1001, 3, "Temp") == 37.5


def test_statics_outcome_and_schema(sources: dict[str, Path]) -> None:
    c = physionet2012(sources["set-a.csv"])
    s = c.static_table().set_index("RecordID")
    assert s.loc[1001, "Gender"] == "Male" and s.loc[1002, "Gender"] == "Female"
    assert s["ICUType"].tolist() == ["Cardiac surgery recovery", "Medical", "Surgical"]
    assert s["in_hospital_death"].tolist() == [1, 0, 0]
    assert s["Age"].tolist() == [70.0, 50.0, 90.0]
    sc = c.schema
    assert (sc.id, sc.time) == ("RecordID", "step")
    assert [v.name for v in sc.static] == [
        "Age",
        "Gender",
        "Height",
        "ICUType",
        "in_hospital_death",
    ]
    assert sc["Gender"].kind == "binary" and sc["Gender"].levels == ["Female", "Male"]
    assert sc["Gender"].missing == "flag"
    assert sc["ICUType"].kind == "categorical" and len(sc["ICUType"].levels) == 4
    assert sc["in_hospital_death"].levels == [0, 1]
    assert sc["GCS"].kind == "categorical" and sc["GCS"].levels == list(range(3, 16))
    assert sc["MechVent"].kind == "binary" and sc["MechVent"].missing == "none"
    assert sc["Weight"].role == "dynamic"
    assert sc["HR"].kind == "real" and sc["HR"].transform == "minmax"
    assert sc["Urine"].transform == "boxcox" and sc["HR"].missing == "flag"
    assert sc["Age"].missing == "none"
    assert "Creatinine" not in sc  # never measured in these stays


def test_variables_select_in_order(sources: dict[str, Path], tmp_path: Path) -> None:
    c = physionet2012(sources["set-a"], variables=["HR", "Age", "in_hospital_death"])
    assert c.schema.names == ["HR", "Age", "in_hospital_death"]
    (tmp_path / "Outcomes-a.txt").unlink()
    assert physionet2012(sources["set-a"], variables=["HR"]).schema.names == ["HR"]
    with pytest.raises(ValueError, match="Creatinine"):
        physionet2012(sources["set-a"], variables=["HR", "Creatinine"])
    with pytest.raises(ValueError, match="distinct names"):
        physionet2012(sources["set-a"], variables=["Heart rate"])


def test_outcomes_errors(sources: dict[str, Path], tmp_path: Path) -> None:
    elsewhere = tmp_path / "other" / "Outcomes-a.txt"
    with pytest.raises(ValueError, match="outcomes file not found") as e:
        physionet2012(sources["set-a.csv"], outcomes=elsewhere)
    assert str(elsewhere) in str(e.value)
    (tmp_path / "Outcomes-a.txt").unlink()
    with pytest.raises(ValueError, match="Outcomes-a.txt: outcomes file not found"):
        physionet2012(sources["set-a.csv"])
    partial = tmp_path / "partial.txt"
    partial.write_text(OUTCOMES.rsplit("\n", 2)[0] + "\n")
    with pytest.raises(ValueError, match=r"no outcome for 1 records, e.g. \[1003\]"):
        physionet2012(sources["set-a.csv"], outcomes=partial)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("id,death\n1001,1\n")
    with pytest.raises(ValueError, match="wrong.txt: expected outcome columns"):
        physionet2012(sources["set-a.csv"], outcomes=wrong)


def test_bad_sources(tmp_path: Path) -> None:
    wrong = tmp_path / "measurements.csv"
    wrong.write_text("id,time,name,value\n1,00:00,HR,80\n")
    with pytest.raises(ValueError, match=r"measurements.csv: expected columns \['RecordID'"):
        read_physionet2012_long(wrong)
    with pytest.raises(ValueError, match="nowhere.csv.gz: not found"):
        physionet2012(tmp_path / "nowhere.csv.gz")
    badtime = tmp_path / "badtime.csv"
    badtime.write_text("RecordID,Time,Parameter,Value\n1,0:0:0,HR,80\n")
    with pytest.raises(ValueError, match="badtime.csv: Time must be hh:mm"):
        read_physionet2012_long(badtime)
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "1.txt").write_text("Parameter,Value\nHR,80\n")
    with pytest.raises(ValueError, match=r"1.txt: expected a record file with header"):
        read_physionet2012_long(folder)
    with pytest.raises(ValueError, match="unknown format"):
        read_physionet2012_long(folder / "1.txt")


def test_demo_cohort() -> None:
    c = demo()
    assert len(c) == 4000 and c.lengths.unique().tolist() == [12]
    assert c.schema.names == DEMO_VARIABLES
    assert {v.name for v in c.schema.static} == {"Age", "Gender", "ICUType", "in_hospital_death"}
    assert c.schema["GCS"].levels == list(range(3, 16))
    assert c.schema["Creatinine"].transform == "boxcox"
    assert c.table["in_hospital_death"].groupby(c.table["RecordID"]).first().sum() == 554


needs_set_a = pytest.mark.skipif(not SET_A.exists(), reason=f"{SET_A} not available")


@needs_set_a
def test_full_set_a() -> None:
    c = physionet2012(SET_A)
    assert len(c) == 4000 and c.lengths.unique().tolist() == [48]
    assert len(c.schema.static) == 5 and len(c.schema.dynamic) == 34
    encoder = Encoder(c.schema).fit(c)
    back = encoder.decode(encoder.transform(c))
    pd.testing.assert_frame_equal(back.table, c.table, rtol=1e-6)


@needs_set_a
def test_bundled_demo_is_current(tmp_path: Path) -> None:
    """The shipped file is what the current loader makes of set A."""
    main(["--source", str(SET_A), "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "physionet2012_demo.parquet",
        "physionet2012_demo.schema.yaml",
    ]
    shipped, rebuilt = demo(), build_demo(SET_A)
    assert shipped.schema == rebuilt.schema
    pd.testing.assert_frame_equal(shipped.table, rebuilt.table, rtol=1e-6)
    written = pd.read_parquet(tmp_path / "physionet2012_demo.parquet")
    assert written["HR"].dtype == np.float32
