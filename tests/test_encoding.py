import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthgym import Cohort, Encoder, Schema, Variable


def assert_same_cohort(a: pd.DataFrame, b: pd.DataFrame, schema: Schema) -> None:
    assert list(a.columns) == list(b.columns)
    assert a[schema.id].tolist() == b[schema.id].tolist()
    assert a[schema.time].tolist() == b[schema.time].tolist()
    for v in schema.variables:
        x, y = a[v.name], b[v.name]
        assert x.isna().tolist() == y.isna().tolist(), v.name
        if v.kind == "real":
            xv, yv = x.dropna().to_numpy(float), y.dropna().to_numpy(float)
            np.testing.assert_allclose(yv, xv, rtol=1e-6, atol=1e-9 * max(1.0, np.abs(xv).max()))
        else:
            assert x.dropna().tolist() == y.dropna().tolist(), v.name


def test_layout_blocks_and_mask(table):
    c = Cohort(table, id="pid", time="hour")
    enc = Encoder(c.schema).fit(c)
    e = enc.transform(c)
    names = [col.name for col in enc.static_columns]
    assert names == ["age", "sex", "unit"]  # reals first, then spans
    dyn = [(col.name, col.end - col.start) for col in enc.dynamic_columns]
    assert dyn == [("hr", 1), ("lactate", 1), ("vent", 2), ("gcs", 3), ("lactate__measured", 2)]
    assert e.static.shape == (6, 6) and e.dynamic.shape == (6, 5, 9)
    assert e.lengths.tolist() == c.lengths.tolist()
    assert e.dynamic[~e.mask].sum() == 0
    reals = e.dynamic[e.mask][:, :2]
    assert reals.min() >= 0 and reals.max() <= 1
    np.testing.assert_allclose(e.dynamic[e.mask][:, 2:].sum(axis=1), 3)  # three spans


def test_missing_values_are_flagged_carried_forward_and_restored(table):
    c = Cohort(table, id="pid", time="hour")
    enc = Encoder(c.schema).fit(c)
    e = enc.transform(c)
    col = next(x for x in enc.dynamic_columns if x.name == "lactate")
    flag = next(x for x in enc.dynamic_columns if x.name == "lactate__measured")
    lac = c.table["lactate"].to_numpy()
    rows = e.dynamic[e.mask]
    assert rows[:, flag.start + 1].tolist() == (~np.isnan(lac)).tolist()
    # a gap after a measurement carries it forward within the patient
    i = next(
        i
        for i in range(1, len(lac))
        if np.isnan(lac[i]) and not np.isnan(lac[i - 1]) and c.table.pid[i] == c.table.pid[i - 1]
    )
    assert rows[i, col.start] == rows[i - 1, col.start]
    assert_same_cohort(enc.decode(e).table, c.table, c.schema)


def test_decoding_any_generator_output_gives_a_valid_cohort(table):
    c = Cohort(table, id="pid", time="hour")
    enc = Encoder(c.schema).fit(c)
    rng = np.random.default_rng(0)
    static = rng.normal(0, 3, (50, enc.n_static))
    dynamic = rng.normal(0, 3, (50, 7, enc.n_dynamic))
    out = enc.inverse_transform(static, dynamic, lengths=rng.integers(1, 8, 50))
    synth = Cohort(out, c.schema)  # validates levels, steps, static constancy
    assert len(synth) == 50 and synth.table.pid.min() == 1
    hr = synth.table.hr
    assert hr.min() >= c.table.hr.min() - 1e-9 and hr.max() <= c.table.hr.max() + 1e-9
    per_step = rng.normal(0, 1, (50, 7, enc.n_static))  # faithful v1 emits statics per step
    drift = enc.inverse_transform(per_step, dynamic)
    with pytest.raises(ValueError, match="static column"):
        Cohort(drift, c.schema)
    assert len(Cohort(drift, c.schema, strict=False)) == 50


def test_encoder_json_round_trip(tmp_path, table):
    c = Cohort(table, id="pid", time="hour")
    enc = Encoder(c.schema).fit(c)
    enc.save(tmp_path / "encoder.json")
    back = Encoder.load(tmp_path / "encoder.json")
    np.testing.assert_array_equal(back.transform(c).dynamic, enc.transform(c).dynamic)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a valid healthgym encoder"):
        Encoder.load(tmp_path / "bad.json")
    json.loads((tmp_path / "encoder.json").read_text())  # plain JSON, no pickle


def test_unfitted_encoder_and_wrong_shapes(table):
    c = Cohort(table, id="pid", time="hour")
    with pytest.raises(RuntimeError, match="the encoder is not fitted"):
        Encoder(c.schema).transform(c)
    enc = Encoder(c.schema).fit(c)
    with pytest.raises(
        ValueError, match=r"dynamic block has shape \(2, 3, 4\), expected \(N, T, 9\)"
    ):
        enc.inverse_transform(np.zeros((2, 6)), np.zeros((2, 3, 4)))


# ---- property: encode then decode returns the cohort, on random schemas -------------------
@st.composite
def cohorts(draw):
    n_real = draw(st.integers(0, 3))
    n_cat = draw(st.integers(0 if n_real else 1, 3))
    variables = []
    for i in range(n_real):
        variables.append(
            Variable(
                f"r{i}",
                "real",
                draw(st.sampled_from(["static", "dynamic"])),
                transform=draw(st.sampled_from(["boxcox", "log1p", "minmax"])),
                missing=draw(st.sampled_from(["none", "flag"])),
            )
        )
    for i in range(n_cat):
        k = draw(st.integers(2, 5))
        levels = draw(st.sampled_from([list(range(k)), [f"L{j}" for j in range(k)]]))
        variables.append(
            Variable(
                f"c{i}",
                "binary" if k == 2 else "categorical",
                draw(st.sampled_from(["static", "dynamic"])),
                levels=levels,
                missing=draw(st.sampled_from(["none", "flag"])),
            )
        )
    schema = Schema("id", "t", variables)
    n = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    start = draw(st.integers(0, 2))
    rows = {
        "id": np.repeat(np.arange(n) * 7, lengths),
        "t": np.concatenate([np.arange(start, start + k) for k in lengths]),
    }
    m = len(rows["id"])
    value = st.floats(0, 1e4, allow_nan=False, allow_subnormal=False).map(lambda x: round(x, 3))
    for v in variables:
        static = v.role == "static"
        k = n if static else m
        if v.kind == "real":
            vals = np.array(draw(st.lists(value, min_size=k, max_size=k)), dtype=object)
        else:
            vals = np.array(
                draw(st.lists(st.sampled_from(v.levels), min_size=k, max_size=k)), dtype=object
            )
        if v.missing == "flag":
            holes = np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
            holes[draw(st.integers(0, k - 1))] = False  # never an all-missing column
            vals[holes] = None
        col = np.repeat(vals, lengths) if static else vals
        rows[v.name] = col.astype(float) if v.kind == "real" else col
    return Cohort(pd.DataFrame(rows), schema)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts())
def test_round_trip_on_random_schemas(cohort):
    enc = Encoder(cohort.schema).fit(cohort)
    back = enc.decode(enc.transform(cohort))
    assert_same_cohort(back.table, cohort.table, cohort.schema)
