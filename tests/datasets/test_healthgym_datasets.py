"""Health Gym's published datasets: loaders, presets, export, and the CLI, on hand-made files
written in the published layouts (a few patients, values in the published ranges; not real
data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import healthgym as hg
from healthgym.cli import main
from healthgym.datasets import (
    DATASETS,
    art_for_hiv,
    hypotension,
    load_published,
    published_dataset,
    sepsis,
    to_published,
    write_published,
)
from healthgym.datasets.healthgym_layouts import LAYOUTS
from healthgym.models.v1.config import CURRICULA
from healthgym.models.v1.model import PRESETS
from helpers import make_table

LOADERS = {"art-for-hiv": art_for_hiv, "hypotension": hypotension, "sepsis": sepsis}
TINY = {"hidden": 8, "noise_dim": 8, "epochs": 1, "batch_size": 4, "curriculum": (2, 3)}


def header(dataset: str) -> list[str]:
    layout = LAYOUTS[dataset]
    return [""] * layout.row_index + list(layout.columns)


def art_file(n: int = 6, steps: int = 6, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(1, n + 1):
        gender, ethnic = rng.integers(1, 3), rng.integers(1, 5)
        for t in range(steps):
            rows.append(
                {
                    "VL": round(float(np.clip(rng.lognormal(3.7, 2.5), 0.1, 97566)), 2),
                    "CD4": round(float(np.clip(rng.lognormal(6.1, 0.6), 8, 42475)), 1),
                    "Rel CD4": round(float(rng.uniform(2, 55)), 2),
                    "Gender": gender,
                    "Ethnic": ethnic,
                    "Base Drug Combo": rng.integers(0, 6),
                    "Comp. INI": rng.integers(0, 4),
                    "Comp. NNRTI": rng.integers(0, 4),
                    "Extra PI": rng.integers(0, 6),
                    "Extra pk-En": rng.integers(0, 2),
                    "VL (M)": rng.integers(0, 2),
                    "CD4 (M)": rng.integers(0, 2),
                    "Drug (M)": rng.integers(0, 2),
                    "PatientID": p,
                    "Timestep": t,
                }
            )
    return pd.DataFrame(rows)


def hypotension_file(n: int = 6, steps: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        for t in range(steps):
            row = {
                "MAP": round(rng.uniform(45, 110), 1),
                "diastolic_bp": round(rng.uniform(30, 80), 1),
                "systolic_bp": round(rng.uniform(70, 160), 1),
                "urine": round(rng.gamma(1.2, 60), 1),
                "ALT": round(rng.lognormal(3.5, 1), 1),
                "AST": round(rng.lognormal(3.8, 1), 1),
                "PO2": round(rng.uniform(60, 300), 1),
                "lactic_acid": round(rng.lognormal(0.7, 0.5), 2),
                "serum_creatinine": round(rng.lognormal(0.2, 0.5), 2),
                "fluid_boluses": rng.choice([0, 250, 500, 1000]),
                "vasopressors": rng.choice([0.0, 1e-06, 8.4, 20.28]),
                "FiO2": rng.choice([0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
                "GCS_total": rng.integers(3, 16),
            }
            flags = ["urine_m", "ALT_AST_m", "FiO2_m", "GCS_total_m", "PO2_m", "lactic_acid_m"]
            row |= {f: rng.integers(0, 2) for f in [*flags, "serum_creatinine_m"]}
            rows.append(row | {"PatientID": 1000 + p, "Timepoints": t})
    table = pd.DataFrame(rows)
    table.insert(0, "", range(len(table)))
    return table


def sepsis_file(n: int = 6, seed: int = 0) -> pd.DataFrame:
    layout = LAYOUTS["sepsis"]
    reals = [v.name for v in layout.variables if v.kind == "real"]
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        for t in range(int(rng.integers(3, 6))):  # variable lengths, as in the published cohort
            row = {r: round(rng.lognormal(2, 1), 2) for r in reals}
            row |= {"Age": round(rng.uniform(18, 90), 1), "pH": round(rng.normal(7.4, 0.05), 2)}
            row |= {"BE": round(rng.normal(0, 4), 1), "FiO2": round(rng.uniform(0.21, 1), 2)}
            row |= {c: rng.integers(0, 2) for c in ("Gender", "ReAd", "Mech")}
            row |= {"GCS": rng.integers(3, 16)}
            row |= {c: rng.integers(0, 10) for c in ("SpO2", "PTT", "PT", "INR")}
            rows.append(row | {"PatientID": p, "Timepoints": t})
    table = pd.DataFrame(rows)[list(layout.columns)]
    table.insert(0, "", range(len(table)))
    return table


FILES = {"art-for-hiv": art_file, "hypotension": hypotension_file, "sepsis": sepsis_file}


@pytest.fixture(params=DATASETS)
def published(request, tmp_path):
    """(dataset, path of a hand-made file in its published layout)."""
    path = tmp_path / f"{request.param}.csv"
    FILES[request.param]().to_csv(path, index=False)
    return request.param, path


def test_art_codes_become_labelled_levels_with_published_kinds_and_roles(tmp_path):
    path = tmp_path / "art.csv"
    raw = art_file()
    raw.to_csv(path, index=False)
    cohort = art_for_hiv(path)
    s = cohort.schema
    assert (s.id, s.time) == ("PatientID", "Timestep")
    assert [v.name for v in s.static] == ["Gender", "Ethnic"]
    assert s["Gender"].levels == ["Male", "Female"] and s["Gender"].kind == "binary"
    assert s["Base Drug Combo"].levels[3] == "DRV+FTC+TDF"
    assert s["Extra PI"].levels[-1] == "Not Applied"
    assert s["Extra pk-En"].levels == ["False", "True"]
    assert {s[r].transform for r in ("VL", "CD4", "Rel CD4")} == {"boxcox"}
    assert s["VL (M)"].kind == "binary" and s["VL (M)"].levels == [0, 1]
    female = raw["Gender"] == 2
    assert (cohort.table.loc[female, "Gender"] == "Female").all()
    assert (cohort.table.loc[raw["Ethnic"] == 3, "Ethnic"] == "Caucasian").all()


def test_mimic_layouts_kinds_levels_and_transforms(tmp_path):
    hypotension_file().to_csv(tmp_path / "h.csv", index=False)
    h = hypotension(tmp_path / "h.csv").schema
    assert (h.id, h.time) == ("PatientID", "Timepoints") and not h.static
    assert len(h["FiO2"].levels) == 10 and len(h["GCS_total"].levels) == 13
    assert h["fluid_boluses"].levels == ["[0, 250)", "[250, 500)", "[500, 1000)", ">= 1000"]
    assert h["ALT_AST_m"].kind == "binary" and h["MAP"].transform == "boxcox"
    sepsis_file().to_csv(tmp_path / "s.csv", index=False)
    s = sepsis(tmp_path / "s.csv").schema
    kinds = [v.kind for v in s.variables]
    assert (kinds.count("real"), kinds.count("binary"), kinds.count("categorical")) == (36, 3, 5)
    assert s["Gender"].levels == ["Male", "Female"] and len(s["PTT"].levels) == 10
    assert (s["HR"].transform, s["Lactate"].transform) == ("minmax", "log1p")


def test_load_then_export_reproduces_the_file_byte_for_byte(published, tmp_path):
    dataset, path = published
    cohort = LOADERS[dataset](path)
    assert published_dataset(cohort.schema) == dataset
    frame = to_published(cohort)
    assert list(frame.columns) == header(dataset)
    out = write_published(cohort, tmp_path / "out.csv")
    assert out.read_text() == path.read_text()


def test_reading_tolerates_float_codes_any_column_order_unsorted_rows_and_a_row_index(tmp_path):
    raw = art_file()
    raw.to_csv(tmp_path / "plain.csv", index=False)
    messy = raw.astype({c: float for c in ("Gender", "Ethnic", "Extra PI", "Drug (M)")})
    messy = messy[messy.columns[::-1]].sample(frac=1, random_state=0).reset_index(drop=True)
    messy.to_csv(tmp_path / "messy.csv")  # pandas' default: a leading unnamed row index
    assert "1.0" in (tmp_path / "messy.csv").read_text()
    expected = art_for_hiv(tmp_path / "plain.csv").table
    pd.testing.assert_frame_equal(art_for_hiv(tmp_path / "messy.csv").table, expected)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.drop(columns="CD4 (M)"), r"missing \['CD4 \(M\)'\], unexpected \[\]"),
        (lambda t: t.assign(Extra=1), r"unexpected \['Extra'\]\); expected the columns"),
        (lambda t: t.rename(columns={"Timestep": "Month"}), r"found \[.*'Month'\]"),
        (lambda t: t.assign(Gender=3), r"column 'Gender' has codes \[3.0\] .* \[1, 2\]"),
        (lambda t: t.assign(**{"Comp. INI": 3.5}), r"column 'Comp. INI' has codes \[3.5\]"),
        (lambda t: t.assign(Ethnic="Asian"), r"column 'Ethnic' holds non-numeric values"),
    ],
)
def test_wrong_columns_and_codes_are_named(tmp_path, change, message):
    path = tmp_path / "art.csv"
    change(art_file()).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        art_for_hiv(path)


def test_other_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown Health Gym dataset 'mimic'"):
        load_published("mimic", tmp_path / "x.csv")
    with pytest.raises(ValueError, match="file not found"):
        sepsis(tmp_path / "x.csv")
    generic = hg.Cohort(make_table(), id="pid", time="hour")
    with pytest.raises(ValueError, match="match no published Health Gym layout"):
        to_published(generic)
    art_file().to_csv(tmp_path / "art.csv", index=False)
    with pytest.raises(ValueError, match="does not have the sepsis .* variables"):
        to_published(art_for_hiv(tmp_path / "art.csv"), "sepsis")


def test_presets_carry_the_published_settings():
    expected = {"art-for-hiv": (256, 10.0, 200), "hypotension": (128, 1.0, 5000)}
    expected["sepsis"] = (32, 10.0, 400)
    for name, (batch, lambda_corr, epochs) in expected.items():
        c = hg.HealthGymV1.preset(name).config
        assert (c.batch_size, c.lambda_corr, c.epochs) == (batch, lambda_corr, epochs)
        assert c.curriculum == CURRICULA[name]


@pytest.mark.parametrize("dataset", ["hypotension", "sepsis"])
def test_train_sample_export_reload(dataset, tmp_path):
    path = tmp_path / "data.csv"
    FILES[dataset]().to_csv(path, index=False)
    model = hg.HealthGymV1.preset(dataset, **TINY)
    model.fit(LOADERS[dataset](path), tmp_path / "run", progress=False)
    synth = hg.load(tmp_path / "run").sample(5, seed=1)
    out = write_published(synth, tmp_path / "synthetic.csv")
    assert pd.read_csv(out, nrows=0).columns.tolist() == ["Unnamed: 0", *LAYOUTS[dataset].columns]
    again = LOADERS[dataset](out)
    assert len(again) == 5 and again.schema.names == synth.schema.names


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_trains_on_a_dataset_and_samples_in_its_layout(tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "art-for-hiv", TINY)  # the dataset's preset, made tiny
    data, run_dir, out = tmp_path / "art.csv", tmp_path / "run", tmp_path / "synthetic.csv"
    art_file().to_csv(data, index=False)
    r = run("train", data, "--dataset", "art-for-hiv", "--out", run_dir, "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((run_dir / "model.json").read_text())["config"]["hidden"] == 8
    r = run("sample", run_dir, "-n", 4, "-o", out, "--format", "healthgym")
    assert r.exit_code == 0 and "wrote 4 patients (24 rows)" in r.output, r.output
    assert pd.read_csv(out, nrows=0).columns.tolist() == header("art-for-hiv")
    synth = art_for_hiv(out, strict=False)  # v1 may let Gender/Ethnic drift within a patient
    assert len(synth) == 4 and set(synth.table["Gender"]) <= {"Male", "Female"}

    r = run("sample", run_dir, "-n", 2, "-o", tmp_path / "s.parquet", "--format", "healthgym")
    assert r.exit_code == 2 and "name it OUT.csv" in r.output
    r = run("train", data, "--dataset", "sepsis", "--id", "PatientID", "--out", tmp_path / "r2")
    assert r.exit_code == 2 and "drop --id, --time and --schema" in r.output
    r = run("train", data, "--dataset", "sepsis", "--out", tmp_path / "r2")
    assert r.exit_code == 2 and "not the published sepsis" in r.output
