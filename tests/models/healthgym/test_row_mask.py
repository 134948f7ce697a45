"""The default model keeps the schema's rows block when it samples (issue 33): no row holds
two exclusive items, a last-only item only ends a stay; an untrained model without the
mask breaks both, so the test can fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import healthgym as hg
from healthgym.data.row_rules import check_rows, holds
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
    kept = model.sample(400, seed=1)
    assert broken(kept) == 0
    check_rows(kept.table, kept.schema)  # what training would accept
    assert (kept.table["died"] == 1).any() or (kept.table["survived"] == 1).any()
    monkeypatch.setattr(row_mask.RowMask, "of", classmethod(lambda cls, t, device="cpu": None))
    assert broken(model.sample(400, seed=1)) > 0  # the same model, unmasked
