import numpy as np
import pandas as pd
import pytest

from healthgym import Schema, Variable, infer_schema


def test_inference_kinds_roles_transforms_missing(table):
    s = infer_schema(table, "pid", "hour")
    assert s.names == ["sex", "unit", "age", "hr", "lactate", "vent", "gcs"]
    assert (s["sex"].kind, s["sex"].role, s["sex"].levels) == (
        "binary",
        "static",
        ["Female", "Male"],
    )
    assert (s["unit"].kind, s["unit"].levels) == ("categorical", ["CCU", "MICU", "SICU"])
    assert (s["age"].kind, s["age"].role) == ("real", "static")
    assert (s["hr"].kind, s["hr"].transform, s["hr"].missing) == ("real", "minmax", "none")
    assert (s["lactate"].transform, s["lactate"].missing) == ("boxcox", "flag")
    assert (s["vent"].kind, s["vent"].levels, s["vent"].role) == ("binary", [0, 1], "dynamic")
    assert (s["gcs"].kind, s["gcs"].levels) == ("categorical", [3, 4, 5])


def test_inference_thresholds_are_overridable(table):
    s = infer_schema(table, "pid", "hour", max_integer_levels=2)
    assert s["gcs"].kind == "real"
    s = infer_schema(table, "pid", "hour", overrides={"gcs": {"levels": list(range(3, 16))}})
    assert s["gcs"].levels == list(range(3, 16))


def test_skewed_nonnegative_real_gets_boxcox():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": np.repeat(np.arange(50), 4), "t": np.tile(np.arange(4), 50)})
    df["vl"] = rng.lognormal(3, 2, len(df))
    df["temp"] = rng.normal(37, 0.5, len(df))
    s = infer_schema(df, "id", "t")
    assert s["vl"].transform == "boxcox" and s["temp"].transform == "minmax"


def test_yaml_round_trip_and_edit(tmp_path, table):
    s = infer_schema(table, "pid", "hour")
    path = tmp_path / "schema.yaml"
    s.to_yaml(path)
    assert Schema.from_yaml(path) == s
    edited = path.read_text().replace("transform: minmax", "transform: log1p", 1)
    path.write_text(edited)
    assert Schema.from_yaml(path)["age"].transform == "log1p"


def test_binning_labels_and_apply():
    v = Variable("fluid", "categorical", bins=[0, 250, 500, 1000, float("inf")])
    assert v.levels == ["[0, 250)", "[250, 500)", "[500, 1000)", "[1000, inf]"]
    s = Schema("id", "t", [v])
    df = pd.DataFrame({"id": [1, 1, 1], "t": [0, 1, 2], "fluid": [0.0, 499.9, 2000.0]})
    assert s.apply_bins(df)["fluid"].tolist() == ["[0, 250)", "[250, 500)", "[1000, inf]"]
    with pytest.raises(ValueError, match=r"column 'fluid': values \[-1.0\] fall outside bins"):
        s.apply_bins(df.assign(fluid=[-1.0, 0, 0]))
    assert Schema.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "text"}, "variable 'x': kind must be one of"),
        ({"kind": "real", "role": "sometimes"}, "variable 'x': role must be one of"),
        ({"kind": "real", "transform": "sqrt"}, "variable 'x': transform must be one of"),
        ({"kind": "binary", "levels": [1, 2, 3]}, "variable 'x': binary needs exactly 2 levels"),
        ({"kind": "categorical"}, "variable 'x': a categorical variable needs its levels"),
        ({"kind": "categorical", "levels": ["a", "a"]}, "variable 'x': duplicate levels"),
        ({"kind": "real", "missing": "drop"}, "variable 'x': missing must be one of"),
    ],
)
def test_bad_variables(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Variable("x", **kwargs)


def test_bad_schema_files(tmp_path):
    with pytest.raises(ValueError, match="nope.yaml: schema file not found"):
        Schema.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        Schema.from_yaml(bad)
    bad.write_text("id: a\nvariables: [{name: x, kind: real}]\n")  # no time
    with pytest.raises(ValueError, match="bad.yaml: not a healthgym schema"):
        Schema.from_yaml(bad)
    with pytest.raises(ValueError, match=r"schema lists these variables twice: \['x'\]"):
        Schema("id", "t", [Variable("x", "real"), Variable("x", "real")])


def test_inference_rejects_free_text_and_constant_columns():
    df = pd.DataFrame({"id": range(200), "t": 0, "note": [f"note {i}" for i in range(200)]})
    with pytest.raises(ValueError, match="column 'note' has 200 distinct text values"):
        infer_schema(df, "id", "t")
    df = pd.DataFrame({"id": [1, 2], "t": 0, "c": [5, 5]})
    with pytest.raises(ValueError, match="column 'c' has a single value 5"):
        infer_schema(df, "id", "t")
    with pytest.raises(ValueError, match="column 'time' not in the table"):
        infer_schema(df, "id", "time")
