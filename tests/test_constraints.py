"""Declared constraints (bounds, monotone, start): inference, YAML, validation, and samples of
every family keeping them by construction."""

import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.data import constraints

STAGES = ["mild", "moderate", "severe"]


def visits_table(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """Irregular visits: `day` since the first visit (monotone, starts at 0), a bounded lab
    with gaps, a stage that only worsens (ordered levels), a static sex."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        day, lab, stage = 0.0, rng.uniform(20, 80), 0
        sex = rng.choice(["F", "M"])
        for t in range(int(rng.integers(1, 9))):
            if t:
                day = round(day + rng.uniform(0.2, 3.0), 2)
                lab = float(np.clip(lab + rng.normal(0, 8), 0, 100))
                stage = min(2, stage + int(rng.random() < 0.3))
            shown = lab if rng.random() > 0.2 else np.nan
            rows.append((p, t, sex, day, shown, ["mild", "moderate", "severe"][stage]))
    return pd.DataFrame(rows, columns=["pid", "t", "sex", "day", "lab", "stage"])


@pytest.fixture(scope="module")
def table():
    return visits_table()


@pytest.fixture(scope="module")
def schema(table):
    return hg.infer_schema(table, "pid", "t").with_overrides(
        lab={"min": 0, "max": 100},
        stage={"kind": "categorical", "levels": STAGES, "monotone": "increasing"},
    )


def test_inference_proposes_monotone_and_start(table):
    s = hg.infer_schema(table, "pid", "t")
    assert (s["day"].monotone, s["day"].start) == ("increasing", 0)
    assert s["lab"].monotone is None and s["lab"].start is None
    assert s["lab"].min is None and s["lab"].max is None  # bounds only when asked
    assert s["sex"].monotone is None and s["sex"].start is None  # static
    # levels sorted by name (mild, moderate, severe) are not numbers: no order to propose
    assert s["stage"].monotone is None and s["stage"].start == "mild"
    bounded = hg.infer_schema(table, "pid", "t", bounds=True)
    assert bounded["lab"].min == table["lab"].min() and bounded["lab"].max == table["lab"].max()
    # a decreasing variable, and too few patients to propose anything
    down = table.assign(day=-table["day"])
    assert hg.infer_schema(down, "pid", "t")["day"].monotone == "decreasing"
    few = table[table["pid"] < 5]
    assert hg.infer_schema(few, "pid", "t")["day"].monotone is None
    # one patient going back is enough to propose nothing
    back = table.copy()
    back.loc[back.index[(back["pid"] == 3) & (back["t"] == 1)], "day"] = -1.0
    assert hg.infer_schema(back, "pid", "t")["day"].monotone is None
    assert hg.infer_schema(back, "pid", "t")["day"].start == 0


def test_yaml_round_trip_and_declaration_errors(schema, tmp_path):
    s = schema
    s.to_yaml(tmp_path / "s.yaml")
    text = (tmp_path / "s.yaml").read_text()
    assert "monotone: increasing" in text and "start: 0" in text and "max: 100" in text
    back = hg.Schema.from_yaml(tmp_path / "s.yaml")
    assert back == s
    assert (back["day"].monotone, back["day"].start, back["lab"].min) == ("increasing", 0, 0)
    bad = {
        "monotone must be one of": {"day": {"monotone": "up"}},
        "min must be a finite number": {"lab": {"min": "low"}},
        "min 5 is above max 1": {"lab": {"min": 5, "max": 1}},
        "start 200 lies outside": {"day": {"start": 200, "max": 100}},
        "not one of its levels": {"stage": {"start": "worst"}},
        "applies to real variables": {"stage": {"max": 2}},
        "apply to dynamic variables": {"sex": {"start": "F"}},
    }
    for message, overrides in bad.items():
        with pytest.raises(ValueError, match=message):
            s.with_overrides(**overrides)


def test_a_real_table_breaking_a_constraint_names_column_and_patient(table, schema):
    hg.Cohort(table, schema)  # the real table obeys what was inferred
    back = table.copy()
    back.loc[back.index[(back["pid"] == 7) & (back["t"] == 2)], "day"] = 0.1
    with pytest.raises(ValueError, match=r"'day'.*monotone: increasing.*patient 7 at t 2"):
        hg.Cohort(back, schema)
    late = table.copy()
    late.loc[late.index[(late["pid"] == 4) & (late["t"] == 0)], "day"] = 0.5
    with pytest.raises(ValueError, match=r"'day' must start at .* 0, but patient 4 starts at 0.5"):
        hg.Cohort(late, schema)
    high = table.copy()
    high.loc[high.index[high["pid"] == 9][0], "lab"] = 101.0
    with pytest.raises(ValueError, match=r"'lab' has 1 values above its declared max 100.*9"):
        hg.Cohort(high, schema)
    hg.Cohort(back, schema, strict=False)  # generated tables are measured, not rejected


def assert_constraints_hold(t: pd.DataFrame, schema: hg.Schema) -> None:
    first = t.groupby("pid").head(1)
    assert (first["day"] == 0).all()
    assert t.groupby("pid")["day"].diff().dropna().ge(0).all()
    assert t["lab"].dropna().between(0, 100).all()
    codes = t["stage"].map({"mild": 0, "moderate": 1, "severe": 2})
    assert codes.groupby(t["pid"]).diff().dropna().ge(0).all()
    hg.Cohort(t, schema)  # and the table validates strictly


def test_enforce_by_construction():
    s = hg.Schema(
        "pid",
        "t",
        [
            hg.Variable("day", "real", monotone="increasing", start=0, missing="flag"),
            hg.Variable("lab", "real", min=0, max=100, missing="flag"),
            hg.Variable("stage", "categorical", levels=STAGES, monotone="increasing"),
        ],
    )
    t = pd.DataFrame(
        {
            "pid": [1, 1, 1, 1, 2, 2],
            "t": [0, 1, 2, 3, 0, 1],
            "day": [np.nan, 2.0, 1.0, 3.0, 0.4, -1.0],
            "lab": [-5.0, 50.0, np.nan, 150.0, 1.0, 2.0],
            "stage": ["moderate", "mild", None, "severe", "severe", "mild"],
        }
    )
    out = constraints.enforce(t.copy(), s)
    np.testing.assert_array_equal(out["day"], [0, 2, 2, 3, 0, 0])
    np.testing.assert_array_equal(out["lab"], [0, 50, np.nan, 100, 1, 2])
    stage = [x if isinstance(x, str) else None for x in out["stage"]]
    assert stage == ["moderate", "moderate", None, "severe", "severe", "severe"]
    assert constraints.enforce(t, hg.infer_schema(t, "pid", "t")) is t  # nothing declared


def test_every_encoder_family_decodes_within_constraints(table, schema):
    cohort = hg.Cohort(table, schema)
    enc = hg.Encoder(schema).fit(cohort)
    encoded = enc.transform(cohort)
    pd.testing.assert_frame_equal(enc.decode(encoded).table, cohort.table, check_dtype=False)
    rng = np.random.default_rng(1)  # what an untrained GAN or v1 generator might output
    static = rng.random(encoded.static.shape)
    dynamic = rng.random(encoded.dynamic.shape) * 3 - 1
    lengths = rng.integers(1, encoded.dynamic.shape[1] + 1, len(static))
    t = enc.inverse_transform(static, dynamic, lengths, ids=encoded.ids)
    assert_constraints_hold(t, schema)


def test_trained_model_samples_keep_constraints(table, schema):
    cohort = hg.Cohort(table, schema)
    model = hg.HealthGym(width=16, batch_size=16, epochs=2, bins=8, fine=4)
    model.fit(cohort, progress=False)
    synth = model.sample(300, seed=0)
    assert_constraints_hold(synth.table, schema)
    raw = model.tokenizer.inverse_transform(  # the decoder alone, on arbitrary tokens
        *_random_tokens(model.tokenizer, 200), seed=0
    )
    assert_constraints_hold(raw, schema)


def _random_tokens(tokenizer, n):
    rng = np.random.default_rng(0)
    t = tokenizer.max_length
    static = np.stack([rng.integers(0, k, n) for k in tokenizer.static_vocab], 1)
    dynamic = np.stack([rng.integers(0, k, (n, t)) for k in tokenizer.dynamic_vocab], 2)
    return static, dynamic, rng.integers(1, t + 1, n)


def test_step_by_step_constraints_equal_the_tables(schema):
    """The simulator's `StepConstraints`, fed one step of every patient at a time (stays of
    different lengths, restarted rows), leaves what `enforce` leaves on the whole table."""
    rng = np.random.default_rng(3)
    n, steps = 40, 6
    raw = pd.DataFrame(
        {
            "pid": np.repeat(np.arange(n), steps),
            "t": np.tile(np.arange(steps), n),
            "day": rng.uniform(-5, 20, n * steps),
            "lab": np.where(rng.random(n * steps) < 0.2, np.nan, rng.normal(50, 60, n * steps)),
            "stage": rng.choice([*STAGES, None], n * steps),
        }
    )
    expected = constraints.enforce(raw.copy(), schema)
    step = constraints.StepConstraints(schema)
    names = ["day", "lab", "stage"]
    for t in range(steps):
        rows = raw[raw["t"] == t]
        got = step.apply({c: rows[c].to_numpy() for c in names}, first=t == 0)
        want = expected[expected["t"] == t]
        np.testing.assert_allclose(got["day"], want["day"], equal_nan=True)
        np.testing.assert_allclose(got["lab"], want["lab"], equal_nan=True)
        assert _levels(got["stage"]) == _levels(want["stage"])
    step.restart(np.ones(n, dtype=bool))  # new stays: the running extremes start afresh
    again = step.apply({c: raw[raw["t"] == 0][c].to_numpy() for c in names}, first=True)
    assert _levels(again["stage"]) == _levels(expected[expected["t"] == 0]["stage"])


def _levels(values) -> list:
    """Levels with every missing value as None (a table may hold NaN where a step holds None)."""
    return [v if pd.notna(v) else None for v in values]
