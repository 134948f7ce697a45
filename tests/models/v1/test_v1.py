"""HealthGymV1 on a Cohort: fit -> run folder -> sample -> save/load, and its errors."""

import json

import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.models.v1.model import design_layout, design_matrix
from helpers import make_table, small_cohort

TINY = {"hidden": 16, "noise_dim": 8, "batch_size": 8, "epochs": 1}


@pytest.fixture(scope="module")
def cohort():
    return small_cohort()


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return hg.HealthGymV1(**TINY).fit(cohort, run, progress=False), run


def test_design_puts_statics_beside_dynamics(cohort):
    enc = hg.Encoder(cohort.schema).fit(cohort)
    e = enc.transform(cohort)
    layout, x = design_layout(enc), design_matrix(e)
    assert (
        x.shape == (24, enc.max_length, enc.n_static + enc.n_dynamic) == (24, 5, layout.n_features)
    )
    np.testing.assert_array_equal(x[:, 3, : enc.n_static], e.static)
    assert len(layout.real_idx) == 3  # age | hr, lactate
    assert len(layout.spans) == 2 + 3  # sex, unit | vent, gcs, lactate__measured


def test_run_folder(trained):
    model, run = trained
    names = {p.name for p in run.iterdir()}
    assert {
        "model.json",
        "schema.yaml",
        "encoder.json",
        "weights.pt",
        "metrics.jsonl",
        "learning_dynamics.png",
        "checkpoints",
    } <= names
    meta = json.loads((run / "model.json").read_text())
    assert meta["model"] == "v1" and meta["config"]["hidden"] == 16
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == model.result.steps > 0
    assert {"epoch", "L", "D_loss", "GP", "D_real", "D_fake", "G_loss", "Corr", "seconds"} <= set(
        json.loads(lines[0])
    )
    assert hg.Schema.from_yaml(run / "schema.yaml") == model.encoder.schema


def test_sample_is_a_valid_cohort_in_original_units(trained, cohort):
    model, _ = trained
    synth = model.sample(30, seed=0, batch_size=7)
    assert len(synth) == 30 and synth.table.pid.tolist()[::5] == list(range(1, 31))
    assert synth.lengths.unique().tolist() == [5]
    assert synth.schema == cohort.schema
    assert set(synth.table.unit.dropna()) <= {"CCU", "MICU", "SICU"}
    hr = synth.table.hr
    assert hr.between(cohort.table.hr.min(), cohort.table.hr.max()).all()
    assert model.sample(4, seed=0, length=2).lengths.tolist() == [2, 2, 2, 2]
    pd.testing.assert_frame_equal(model.sample(9, seed=5).table, model.sample(9, seed=5).table)


def test_load_gives_the_same_samples(trained, tmp_path):
    model, run = trained
    for folder in (run, model.save(tmp_path / "saved")):
        again = hg.load(folder)
        pd.testing.assert_frame_equal(again.sample(8, seed=2).table, model.sample(8, seed=2).table)


def test_errors(trained, cohort, tmp_path):
    model, run = trained
    with pytest.raises(ValueError, match="unknown settings \\['hiden'\\]"):
        hg.HealthGymV1(hiden=3)
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        hg.HealthGymV1.preset("fast")
    with pytest.raises(ValueError, match="fit expects a healthgym Cohort, got DataFrame"):
        hg.HealthGymV1().fit(cohort.table)
    with pytest.raises(RuntimeError, match="the model is not trained"):
        hg.HealthGymV1().sample(3)
    with pytest.raises(ValueError, match="n must be a positive number of patients"):
        model.sample(0)
    with pytest.raises(FileExistsError, match="holds a run; resume it"):
        hg.HealthGymV1(**TINY).fit(cohort, run, progress=False)
    with pytest.raises(ValueError, match="not a healthgym run folder"):
        hg.load(tmp_path)
    (tmp_path / "model.json").write_text("{oops")
    with pytest.raises(ValueError, match="model.json: not valid JSON"):
        hg.load(tmp_path)


def test_resume_refuses_another_cohort(tmp_path, cohort):
    run = tmp_path / "run"
    hg.HealthGymV1(**TINY).fit(cohort, run, progress=False)
    other = hg.Cohort(make_table(24, seed=4), cohort.schema)
    with pytest.raises(ValueError, match="cannot resume, the data differs from the run's"):
        hg.HealthGymV1(**{**TINY, "epochs": 2}).fit(other, run, resume=True, progress=False)
