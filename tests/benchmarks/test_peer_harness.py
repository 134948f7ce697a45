"""The peer benchmark's harness (benchmarks/peers): what needs no peer package runs here; the
peer adapters run only where their package is installed (the `.venv-bench` environment)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import healthgym as hg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: benchmarks/

from benchmarks.peers import harness  # noqa: E402
from benchmarks.peers.common import Fill, peer_tables, to_cohort  # noqa: E402
from benchmarks.peers.healthgym_models import (  # noqa: E402
    HealthGymAdapter,
    HealthGymGANAdapter,
    HealthGymV1Adapter,
)


@pytest.fixture(scope="module")
def small() -> hg.Cohort:
    """60 demo patients, stays cut to 1..12 steps: ragged, with missing values."""
    demo = hg.datasets.demo()
    return harness._cut_stays(demo.subset(demo.ids[:60]), seed=1)


def fake_result(model: str, **values: float) -> dict:
    return {
        "model": model,
        "status": "ok",
        "train_seconds": 12.4,
        "summary": {key: values.get(key.split(".")[-1], 0.5) for _, key, _ in harness.COLUMNS},
    }


def test_table_has_a_row_per_model_and_marks_failures():
    results = [
        fake_result("a", mia_auroc=0.51234),
        {"model": "b", "status": "skipped", "error": "ImportError: no peer"},
        fake_result("c", auroc_ratio=float("nan")),
        fake_result(harness.REFERENCE) | {"train_seconds": None, "reference": True},
    ]
    results[2]["summary"]["privacy.dcr_share"] = None
    lines = harness.build_table(results).splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].startswith("| model | KS compl. (+) |") and lines[0].endswith("| train s |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "| 0.512 |" in lines[2] and lines[2].endswith("| 12 |")
    assert "skipped: ImportError: no peer" in lines[3]
    assert lines[4].count("n/a") == 2
    assert lines[5].startswith(f"| {harness.REFERENCE} |") and lines[5].endswith("| - |")


def test_section_appends_without_touching_other_sections(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Someone else's section\n\nkeep me\n")
    started = pd.Timestamp("2025-01-02 03:04", tz="UTC").to_pydatetime()
    results = [fake_result("healthgym") | {"progress": "3 steps", "synthetic_patients": 5}]
    results[0] |= {"sample_seconds": 1.0, "notes": ["Urine: 2 rows below 0 clipped"]}
    results.append(fake_result(harness.REFERENCE) | {"reference": True, "holdout_patients": 80})
    text = harness.section(results, "demo", 0.3, 1, "python -m benchmarks.peers", started)
    harness.append_section(text, path)
    out = path.read_text()
    assert out.startswith("# Benchmarks\n\n## Someone else's section\n\nkeep me\n\n## Peers: demo")
    assert "2025-01-02 03:04 UTC" in out and "`python -m benchmarks.peers`" in out
    assert "Urine: 2 rows below 0 clipped" in out and "torch " in out
    assert "the 80 holdout patients scored as the synthetic cohort" in out


def test_varlen_cohort_is_deterministic_ragged_and_from_the_demo():
    a, b = harness.varlen_cohort(), harness.varlen_cohort()
    assert len(a) == harness.VARLEN_PATIENTS
    pd.testing.assert_frame_equal(a.table, b.table)
    lengths = a.lengths
    assert lengths.min() >= 1 and lengths.max() <= 12 and lengths.nunique() > 6
    assert a.schema.to_dict() == hg.datasets.demo().schema.to_dict()
    assert a.table.isna().any().any()
    demo = hg.datasets.demo().table.set_index([a.schema.id, a.schema.time])
    mine = a.table.set_index([a.schema.id, a.schema.time])
    pd.testing.assert_frame_equal(demo.loc[mine.index], mine, check_dtype=False)
    train, holdout = harness.load_cohort("varlen")
    assert (len(train), len(holdout)) == (320, 80)


def test_every_development_cohort_is_a_peer_cohort():
    """The peer table runs on the cohorts `benchmarks.trajectories` measures (issue 15)."""
    train, holdout = harness.load_cohort("visits")
    assert (len(train), len(holdout)) == (200, 50)
    assert set(train.ids).isdisjoint(holdout.ids)
    with pytest.raises(ValueError, match="unknown cohort"):
        harness.load_cohort("nope")


def test_own_cut_matches_healthgyms(small):
    from healthgym.datasets.variable_length import cut_stays

    demo = hg.datasets.demo()
    sub = demo.subset(demo.ids[:30])
    pd.testing.assert_frame_equal(cut_stays(sub, seed=3).table, harness._cut_stays(sub, 3).table)


def test_peer_tables_round_trip(small):
    statics, dynamics = peer_tables(small)
    assert statics["Gender"].map(type).isin([str, float]).all()  # strings, NaN for missing
    back = to_cohort(small.schema, statics, dynamics, Fill.of(small), notes := [])
    assert notes == []
    assert (back.lengths.to_numpy() == small.lengths.to_numpy()).all()
    left = back.table.drop(columns=[small.schema.id])
    right = small.table.drop(columns=[small.schema.id])
    pd.testing.assert_frame_equal(left, right)


def test_to_cohort_repairs_what_the_schema_cannot_hold(small):
    statics, dynamics = peer_tables(small)
    statics.loc[0, "ICUType"] = "_RARE_"  # a peer's own token; ICUType has missing: none
    statics.loc[1, "Gender"] = "_RARE_"  # Gender has missing: flag
    dynamics.loc[0, "Urine"] = -5.0  # boxcox: must be >= 0
    dynamics.loc[1, "GCS"] = "15.0"  # the level 15 written as a float
    extra = statics.iloc[:1].assign(**{small.schema.id: -1})  # a patient without rows
    notes: list[str] = []
    back = to_cohort(small.schema, pd.concat([statics, extra]), dynamics, Fill.of(small), notes)
    assert len(back) == len(small)
    first = back.table.iloc[0]
    assert first["ICUType"] in small.schema["ICUType"].levels
    assert pd.isna(back.table["Gender"].iloc[back.lengths.iloc[0]])
    assert first["Urine"] == 0.0 and back.table["GCS"].iloc[1] == 15
    text = " ".join(notes)
    assert "1 synthetic patients had no rows" in text and "Urine: 1 rows below 0" in text
    assert "ICUType: 1 patients with unknown levels" in text
    assert "ICUType: 1 patients missing, set to the training mode" in text
    assert "Gender: 1 patients with unknown levels" in text


GAN_TINY = {"hidden": 8, "noise_dim": 8, "batch_size": 16}


@pytest.mark.parametrize(
    ("adapter_class", "tiny"),
    [
        (HealthGymV1Adapter, GAN_TINY),
        (HealthGymGANAdapter, GAN_TINY),
        (HealthGymAdapter, {"width": 8, "batch_size": 16}),  # autoregressive
    ],
)
def test_healthgym_adapters_at_a_tiny_budget(adapter_class, tiny, small, tmp_path):
    if getattr(hg, "HealthGym", None) is None and adapter_class is HealthGymAdapter:
        pytest.skip("healthgym.HealthGym is not importable yet")
    adapter = adapter_class(run_dir=tmp_path / "run", **tiny)
    adapter.fit(small, minutes=0.02)
    assert adapter.model.step_unit in adapter.progress  # optimizer or generator steps
    assert adapter.model.step_unit == (
        "optimizer steps" if adapter_class is HealthGymAdapter else "generator steps"
    )
    synth = adapter.sample(7)
    assert isinstance(synth, hg.Cohort) and len(synth) == 7
    assert synth.schema.names == small.schema.names


def test_run_model_skips_a_missing_peer(tmp_path, monkeypatch):
    monkeypatch.setitem(harness.MODELS, "nope", ("benchmarks.peers.nope", "Nope", "nope"))
    result = harness.run_model("nope", "varlen", 0.01, 1, tmp_path / "nope")
    assert result["status"] == "skipped" and "ModuleNotFoundError" in result["error"]
    assert (tmp_path / "nope" / "result.json").exists()


PEERS = {"tabularargn": "mostlyai.engine", "dgan": "gretel_synthetics", "par": "sdv"}


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_adapter_at_a_tiny_budget(name, small, tmp_path):
    if importlib.util.find_spec(PEERS[name].split(".")[0]) is None:
        pytest.skip(f"{PEERS[name]} is not installed (the peers live in .venv-bench)")
    adapter = harness.make_adapter(name, tmp_path / "run")
    adapter.fit(small, minutes=0.15)
    synth = adapter.sample(9)
    assert isinstance(synth, hg.Cohort) and 1 <= len(synth) <= 9
    assert synth.schema.names == small.schema.names
    assert np.isin(synth.lengths.to_numpy(), np.arange(1, 13)).all()


def test_rescore_recomputes_the_summary_and_keeps_the_training_facts(tmp_path, monkeypatch):
    """A saved run (made-up summary, a stale report file) scored again: the summary is the
    current `healthgym.evaluate`'s, the training facts stay, `rescored` is added."""
    import json

    from benchmarks.peers.__main__ import main

    demo = hg.datasets.demo()
    real = harness._cut_stays(demo.subset(demo.ids[:150]), seed=2)
    split = real.split(holdout=harness.HOLDOUT, seed=harness.SEED)
    monkeypatch.setattr(harness, "load_cohort", lambda name: split)
    out = tmp_path / "demo" / "fake"
    (out / "report").mkdir(parents=True)
    (out / "report" / "stale.png").write_bytes(b"old")
    synth = harness._cut_stays(demo.subset(demo.ids[150:230]), seed=3)
    synth.to_parquet(out / "synthetic.parquet")
    facts = {
        "model": "fake",
        "cohort": "demo",
        "minutes": 8.0,
        "threads": 1,
        "load_start": [2.5, 2.0, 1.5],
        "train_patients": len(split[0]),
        "holdout_patients": len(split[1]),
        "settings": {"epochs": "5"},
        "train_seconds": 480.5,
        "progress": "123 generator steps",
        "sample_seconds": 2.0,
        "synthetic_patients": 80,
        "notes": ["Urine: 3 rows below 0 clipped"],
        "status": "ok",
        "load_end": [1.0, 1.0, 1.0],
    }
    old_summary = {key: 0.123 for _, key, _ in harness.COLUMNS}
    result = facts | {"summary": old_summary, "report_notes": ["old note"]}
    (out / "result.json").write_text(json.dumps(result))
    (tmp_path / "demo" / "empty").mkdir()  # no synthetic cohort: not a saved model

    assert harness.saved_models(tmp_path / "demo") == ["fake"]
    argv = ["--rescore", "--cohort", "demo", "--out", str(tmp_path), "--no-reference"]
    assert main([*argv, "--benchmarks", str(tmp_path / "B.md"), "--no-append"]) == 0
    assert not (tmp_path / "B.md").exists()

    new = json.loads((out / "result.json").read_text())
    assert {k: new[k] for k in facts} == facts  # training facts as recorded
    assert new["original_summary"] == old_summary
    assert set(new["rescored"]) >= {"date", "commit", "original_written"}
    assert new["rescored"]["commit"] == harness.commit()
    train, holdout = split
    report = hg.evaluate(train, synth, holdout=holdout, outcome=harness.OUTCOME)
    expected = {k: report.value(k) for k, _ in harness._summary_keys(report)}
    assert set(new["summary"]) == set(expected) >= {"privacy.dcr_hub_share"}
    for key, value in expected.items():
        assert new["summary"][key] == pytest.approx(value, nan_ok=True), key
    assert new["summary"]["marginals.ks_complement_mean"] != 0.123
    assert new["report_notes"] == list(report.notes)
    assert new["intervals"]["utility.auroc_ratio"] == pytest.approx(
        report.metrics["utility"]["auroc_ratio_ci"], nan_ok=True
    )
    assert (out / "report" / "index.html").exists() and not (out / "report" / "stale.png").exists()

    # a second rescore keeps the first summary as the original one; the section appends
    assert main([*argv, "--benchmarks", str(tmp_path / "B.md")]) == 0
    again = json.loads((out / "result.json").read_text())
    assert again["original_summary"] == old_summary
    assert again["rescored"]["original_written"] == new["rescored"]["original_written"]
    text = (tmp_path / "B.md").read_text()
    assert f"8 min per model ({harness.RESCORED};" in text
    assert "- fake: 123 generator steps; sampled 80 patients in 2 s; Urine: 3 rows" in text
    assert "| TSTR vs TRTR, chance-corrected (+) |" in text and "| DCR hub share (-) |" in text


def test_rescore_of_a_folder_without_a_synthetic_cohort_is_a_failed_row(tmp_path):
    result = harness.rescore_model("gone", "demo", tmp_path / "gone", split=(None, None))
    assert result["status"] == "failed" and "no synthetic.parquet" in result["error"]
    assert not (tmp_path / "gone").exists()
