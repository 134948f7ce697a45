"""The default model keeps the schema's rows block when it samples (issue 33): no row holds
two exclusive items, a last-only item only ends a stay; an untrained model without the
mask breaks both, so the test can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.data.row_rules import check_rows, holds, row_patterns
from healthgym.models.healthgym import row_mask
from helpers import outcome_stays


def broken(cohort: hg.Cohort) -> int:
    """Rows that break the cohort schema's rows block."""
    table, schema = cohort.table, cohort.schema
    last = np.r_[table[schema.id].to_numpy()[1:] != table[schema.id].to_numpy()[:-1], True]
    bad = np.zeros(len(table), dtype=bool)
    for a, b in schema.rows.exclusive:
        bad |= holds(table, schema, a) & holds(table, schema, b)
    for item in schema.rows.last:
        bad |= holds(table, schema, item) & ~last
    return int(bad.sum())


def test_sampled_rows_keep_the_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = outcome_stays(300, seed=4)
    assert train.schema.rows.last == ("survived=1", "died=1")
    model = hg.HealthGym(width=8, epochs=1, seed=0).fit(train, tmp_path / "run")
    # stays that end in an outcome row: by default the steps draw where they end
    assert model.config.end == "drawn" and hg.load(tmp_path / "run").config.end == "drawn"
    # ... and the previous step's tokens reach the step's end and columns directly (`skip`)
    assert model._fitted()[0].sequence.skip is not None
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    del meta["config"]["skip"]  # as model.json files written before it
    assert hg.HealthGym.from_meta(tmp_path / "run", meta).config.skip is False
    kept = model.sample(400, seed=1)
    assert broken(kept) == 0
    check_rows(kept.table, kept.schema)  # what training would accept
    assert (kept.table["died"] == 1).any() or (kept.table["survived"] == 1).any()
    monkeypatch.setattr(row_mask.RowMask, "of", classmethod(lambda cls, t, device="cpu": None))
    assert broken(model.sample(400, seed=1)) > 0  # the same model, unmasked


def admission_stays(n: int, seed: int) -> hg.Cohort:
    """Stays whose first row only weighs the patient (W, treatment T=0); later rows measure
    A, weigh again half the time, and treat at random: the row (W, T=0) is first-only as a
    whole, and no single item marks it."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n):
        w = rng.normal(80, 10)
        rows.append((pid, 0, np.nan, round(w, 1), 0))
        for t in range(1, int(rng.integers(3, 8))):
            weighed = rng.random() < 0.5
            rows.append((pid, t, round(rng.normal(90, 10), 1),
                         round(w, 1) if weighed else np.nan, int(rng.random() < 0.5)))  # fmt: skip
    return hg.Cohort(pd.DataFrame(rows, columns=["pid", "t", "A", "W", "T"]), id="pid", time="t")


def test_sampled_rows_keep_first_only_patterns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = admission_stays(300, seed=2)
    assert train.schema.rows.first_patterns == (("W", "T=0"),)
    model = hg.HealthGym(width=8, epochs=1, seed=0).fit(train, tmp_path / "run")
    assert model.config.end == "length"  # no outcome row: the length is drawn with the statics

    def misplaced(cohort: hg.Cohort) -> int:
        later = cohort.table.groupby("pid").cumcount().to_numpy() > 0
        pats = row_patterns(cohort.table, cohort.schema)
        return int(sum(p == ("W", "T=0") for p, t in zip(pats, later, strict=True) if t))

    kept = model.sample(400, seed=1)
    assert misplaced(kept) == 0
    check_rows(kept.table, kept.schema)
    assert (kept.table.groupby("pid").cumcount() > 0).sum() > 400  # stays go on past the first
    monkeypatch.setattr(row_mask.RowMask, "of", classmethod(lambda cls, t, device="cpu": None))
    assert misplaced(model.sample(400, seed=1)) > 0  # the same model, unmasked
