"""Run folders of every family: resume through the model API, the weights fallback, the
folders written by healthgym 0.1.0, and a resume with the wrong model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import healthgym as hg
from healthgym.models import MODELS
from helpers import make_table

LEGACY = Path(__file__).parents[1] / "data" / "runs-0.1"
TINY = {
    "healthgym": {"width": 8, "epochs": 2},
    "gan": {"hidden": 8, "noise_dim": 4, "batch_size": 8, "epochs": 2, "calibration_patients": 16},
    "v1": {"hidden": 8, "noise_dim": 4, "batch_size": 8, "epochs": 2},
}


@pytest.fixture(scope="module")
def cohort() -> hg.Cohort:
    return hg.Cohort(make_table(24, seed=3), id="pid", time="hour")


def model(family: str, **settings) -> hg.HealthGym | hg.HealthGymGAN | hg.HealthGymV1:
    return MODELS[family](**{**TINY[family], **settings})


@pytest.mark.parametrize("family", list(MODELS))
def test_stop_resume_and_sample_as_the_uninterrupted_run(family, cohort, tmp_path):
    whole = model(family).fit(cohort, tmp_path / "a", progress=False)
    part = model(family).fit(cohort, tmp_path / "b", max_minutes=1e-6, progress=False)
    assert part.result.stopped_early == "max_minutes" and part.result.steps == 1
    with pytest.raises(FileExistsError, match="holds a run"):
        model(family).fit(cohort, tmp_path / "b", progress=False)
    done = model(family).fit(cohort, tmp_path / "b", resume=True, progress=False)
    assert done.result.steps == whole.result.steps
    want = whole.sample(9, seed=5).table
    pd.testing.assert_frame_equal(done.sample(9, seed=5).table, want)
    for folder in (tmp_path / "b", done.save(tmp_path / "saved")):
        pd.testing.assert_frame_equal(hg.load(folder).sample(9, seed=5).table, want)
    (tmp_path / "b" / "weights.pt").unlink()  # a run killed before its weights were written
    pd.testing.assert_frame_equal(hg.load(tmp_path / "b").sample(9, seed=5).table, want)


@pytest.mark.parametrize("family", list(MODELS))
def test_run_folders_of_0_1_load_and_sample_the_same_patients(family):
    folder = LEGACY / family
    loaded = hg.load(folder)
    assert type(loaded) is MODELS[family]
    want = pd.read_csv(folder / "sample-n12-seed5.csv")
    got = loaded.sample(12, seed=5).table
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), want, check_dtype=False, check_exact=False, rtol=1e-12
    )


def test_healthgym_0_1_weights_give_0_1_patients_through_the_old_sampler():
    """Issue 18 changed the default model's sampler (one inverse-CDF uniform per token instead
    of torch.multinomial), so `sample-n12-seed5.csv` is today's draw; through the sampler of
    0.1.0 (`benchmarks.reference_healthgym`) the loaded weights still give 0.1.0's patients."""
    from benchmarks.reference_healthgym import legacy

    folder = LEGACY / "healthgym"
    want = pd.read_csv(folder / "sample-n12-seed5-0.1.csv")
    with legacy(training=False):
        got = hg.load(folder).sample(12, seed=5).table
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), want, check_dtype=False, check_exact=False, rtol=1e-12
    )


@pytest.mark.parametrize("family", list(MODELS))
def test_resume_with_another_model_changes_nothing(family, cohort, tmp_path):
    run = tmp_path / "run"
    trained = model(family).fit(cohort, run, progress=False)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for other in set(MODELS) - {family}:
        with pytest.raises(ValueError, match=f"not '{other}'"):
            model(other).fit(cohort, run, resume=True, progress=False)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # nothing renamed, overwritten or added
    pd.testing.assert_frame_equal(
        hg.load(run).sample(5, seed=1).table, trained.sample(5, seed=1).table
    )
