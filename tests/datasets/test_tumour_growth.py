"""The tumour growth ground truth (issue 28): its recorded stays follow its equations, its
care is confounded as gamma says, and its counterfactuals answer as the equations do."""

import numpy as np
import pytest

from healthgym.datasets import tumour_growth as tg


def test_recorded_volumes_follow_the_equations_under_the_recorded_treatments():
    cohort, params = tg.simulate(200, gamma=2.0, seed=1)
    t = cohort.table.set_index(["patient", "day"])
    errors = []
    for pid in range(200):
        rows = t.loc[pid]
        if len(rows) < 12:
            continue
        day = 10
        treat = rows.loc[[day], ["chemo", "radio"]].to_numpy(float)[None]  # (1, 1, 2)
        expected = tg.counterfactual(params.loc[[pid]], day, rows.loc[[day], "volume"], treat)
        now = rows.loc[day, "volume"]
        errors.append((rows.loc[day + 1, "volume"] - expected[0, 0]) / now)  # the noise term
    errors = np.array(errors)
    assert len(errors) > 150
    assert abs(errors.mean()) < 0.003 and errors.std() == pytest.approx(tg.NOISE, rel=0.3)


def test_treatment_shrinks_tumours_and_the_care_treats_big_ones_more():
    cohort, params = tg.simulate(300, gamma=4.0, seed=2)
    first = cohort.table[cohort.table["day"] == 5].set_index("patient")
    ids = first.index.to_numpy()
    none = tg.counterfactual(params.loc[ids], 5, first["volume"], np.zeros((len(ids), 5, 2)))
    both = tg.counterfactual(params.loc[ids], 5, first["volume"], np.ones((len(ids), 5, 2)))
    assert (both[:, -1] < 0.6 * none[:, -1]).mean() > 0.95  # chemo and radio kill cells
    d = cohort.table.assign(diameter=tg.diameter(cohort.table["volume"]))
    big = d["diameter"] > tg.D_MAX / 2
    assert d.loc[big, "chemo"].mean() > d.loc[~big, "chemo"].mean() + 0.2  # confounded
    random, _ = tg.simulate(300, gamma=0.0, seed=2)
    assert random.table["chemo"].mean() == pytest.approx(0.5, abs=0.03)


def test_the_stays_end_at_death_or_recovery_or_the_horizon():
    cohort, _ = tg.simulate(300, gamma=0.0, seed=3)
    lengths = cohort.table.groupby("patient").size()
    assert lengths.max() == tg.HORIZON and (lengths < tg.HORIZON).any()
    last = cohort.table.groupby("patient").tail(1)
    short = last[lengths.to_numpy() < tg.HORIZON]
    died = short["volume"] >= tg.V_MAX
    assert (short.loc[died, "chemo"].isna()).all()  # no treatment on the day of death
    assert (short.loc[~died, "volume"] < 1e-7).all()  # the others recovered: a few cells
