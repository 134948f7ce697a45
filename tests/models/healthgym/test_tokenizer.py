"""Tokenizer: cohort <-> tokens, exact for levels and few-valued reals, within-bin for reals."""

import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.models.healthgym.tokenizer import GRID, Tokenizer
from helpers import make_table


@pytest.fixture(scope="module")
def cohort():
    table = make_table(300, seed=1)
    table.loc[table.index % 7 == 0, "hr"] = 0.0  # a point mass inside a continuous variable
    return hg.Cohort(table, id="pid", time="hour")


def test_round_trip_keeps_levels_values_missingness_and_marginals(cohort):
    tok = Tokenizer(cohort.schema, bins=16, fine=8).fit(cohort)
    kinds = {c.name: c.kind for c in tok.static_columns + tok.dynamic_columns}
    assert kinds == {"sex": "levels", "unit": "levels", "age": "bins", "hr": "bins",
                     "lactate": "bins", "vent": "levels", "gcs": "levels"}  # fmt: skip
    tokens = tok.transform(cohort, seed=0)
    assert tok.dynamic_vocab == [16, 8, 16 + 1, 8, 2, 3]  # hr, lactate (+ missing), vent, gcs
    back = tok.inverse_transform(tokens.static, tokens.dynamic, tokens.lengths, ids=tokens.ids)
    real = cohort.table
    for name in ("pid", "hour", "sex", "unit", "vent", "gcs"):
        assert (back[name].to_numpy() == real[name].to_numpy()).all(), name
    assert (back.lactate.isna() == real.lactate.isna()).all()
    # A binned value comes back inside its 1/(bins * fine) slice of the training CDF.
    # Statics take no fine token (nothing to stay close to): within 1/bins.
    for name, width in (("hr", 1 / (16 * 8)), ("lactate", 1 / (16 * 8)), ("age", 1 / 16)):
        q = np.sort(real[name].dropna().to_numpy())
        cdf_real = np.searchsorted(q, real[name].dropna(), side="right") / len(q)
        cdf_back = np.searchsorted(q, back[name].dropna(), side="right") / len(q)
        assert np.abs(cdf_real - cdf_back).max() < 2 * width + 0.02, name
    assert tok.static_vocab == [2, 3, 16, tok.max_length]  # sex, unit, age, length
    assert (tokens.static[:, -1] + 1 == tokens.lengths).all()
    # The point mass stays exact, but for the one fine slice it shares with its neighbour.
    assert abs((back.hr == 0).sum() - (real.hr == 0).sum()) <= len(real) / (16 * 8)
    assert (back.hr == 0).sum() > 0.9 * (real.hr == 0).sum()
    assert np.array_equal(back.hr, back.hr.round(1))  # decimals of the training values


def test_few_valued_reals_are_exact_and_statics_constant():
    table = make_table(50, seed=2)
    table["score"] = (table.index % 5) * 0.5 + 0.25  # 5 distinct non-integer values
    cohort = hg.Cohort(table, id="pid", time="hour")
    tok = Tokenizer(cohort.schema).fit(cohort)
    col = next(c for c in tok.dynamic_columns if c.name == "score")
    assert col.kind == "values" and col.vocab == [5]
    t = tok.transform(cohort)
    back = tok.inverse_transform(t.static, t.dynamic, t.lengths, ids=t.ids)
    assert np.array_equal(back.score, table.score)
    assert back.groupby("pid").age.nunique().max() == 1


def test_save_load_and_errors(cohort, tmp_path):
    tok = Tokenizer(cohort.schema).fit(cohort)
    tok.save(tmp_path / "tok.json")
    again = Tokenizer.load(tmp_path / "tok.json")
    assert again.to_dict() == tok.to_dict()
    assert len(again.dynamic_columns[0].grid) == GRID
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a healthgym tokenizer file"):
        Tokenizer.load(tmp_path / "bad.json")
    col = next(c for c in tok.static_columns if c.name == "unit")
    with pytest.raises(ValueError, match=r"column 'unit' has values \['PICU'\] outside"):
        col.encode(pd.Series(["PICU"]), None)
    with pytest.raises(ValueError, match="bins must be >= 2"):
        Tokenizer(cohort.schema, bins=1)


def test_a_recurring_value_keeps_its_tokens_and_comes_back_exactly():
    # Weight-like: a patient keeps one value; round values are point masses spread over
    # several fine tokens.
    rng = np.random.default_rng(3)
    n, t = 400, 6
    weight = np.where(rng.random(n) < 0.5, rng.choice([60.0, 70.0, 80.0], n), rng.normal(75, 9, n))
    table = pd.DataFrame(
        {
            "pid": np.repeat(np.arange(n), t),
            "hour": np.tile(np.arange(t), n),
            "weight": np.repeat(weight.round(1), t),
        }
    )
    table.loc[table.index % 5 == 2, "weight"] = np.nan
    table.loc[(table.pid % 2 == 0) & (table.hour >= 4), "weight"] += 5.0  # a change later
    cohort = hg.Cohort(table, id="pid", time="hour")
    tok = Tokenizer(cohort.schema, bins=8, fine=8).fit(cohort)
    assert tok.dynamic_columns[0].kind == "bins"
    held, drawn = (tok.transform(cohort, seed=0, hold=h) for h in (True, False))
    observed = table.weight.notna().to_numpy()
    for tokens, one_per_value in ((held, True), (drawn, False)):
        steps = tokens.dynamic[..., 0] * 8 + tokens.dynamic[..., 1]  # (n, t): the fine step
        per_value = pd.Series(steps.ravel()[observed]).groupby(table.weight[observed].to_numpy())
        assert (per_value.nunique() == 1).all() == one_per_value
    back = tok.inverse_transform(held.static, held.dynamic, held.lengths, ids=held.ids)
    mass = table.weight.map(table.weight.value_counts()) > 100  # the round values
    assert mass.sum() > 700 and (back.weight[mass] == table.weight[mass]).all()
