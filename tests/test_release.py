"""`healthgym release`: the bundle (data, report, datasheet, model card, disclosure risk,
manifest), attribute inference, and the refusals (copies, membership inference)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.release import ReleaseRefused, attribute_inference, build_release, copied_records
from healthgym.sources.demo_cdm import write_demo_cdm
from helpers import make_cohort, one_line_error, run

GEBRU = ("Motivation", "Composition", "Collection process", "Preprocessing", "Uses",
         "Distribution", "Maintenance")  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny default-model run on 400 patients, with its train and holdout CSVs beside it."""
    folder = tmp_path_factory.mktemp("release")
    train, holdout = make_cohort(400, length=6).split(holdout=0.25, seed=0)
    train.to_csv(folder / "train.csv")
    holdout.to_csv(folder / "holdout.csv")
    hg.HealthGym(width=8, epochs=2, seed=0).fit(train, folder / "run")
    return folder


def test_a_release_bundle_is_complete_and_sealed(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    r = run("release", trained / "run", "--real", trained / "train.csv", "--holdout",
            trained / "holdout.csv", "-n", 200, "-o", out, "--outcome", "died")  # fmt: skip
    assert r.exit_code == 0, r.output
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"synthetic.parquet", "synthetic.csv", "schema.yaml", "report/index.html",
            "report/metrics.json", "datasheet.md", "model_card.md", "disclosure_risk.md",
            "disclosure_risk.json", "MANIFEST.sha256", "manifest.json"} <= names  # fmt: skip
    synth = pd.read_parquet(out / "synthetic.parquet")
    assert synth["pid"].nunique() == 200 and len(pd.read_csv(out / "synthetic.csv")) == len(synth)
    sheet = (out / "datasheet.md").read_text()
    assert all(f"## {section}" in sheet for section in GEBRU)
    assert "**[CUSTODIAN]**" in sheet and "200 synthetic patients" in sheet and "`died`" in sheet
    card = (out / "model_card.md").read_text()
    assert "Family: `healthgym`" in card and "300 patients" in card and "None: the model" in card
    risk = (out / "disclosure_risk.md").read_text()
    assert "## Attribute inference" in risk and "| died |" in risk
    assert "<title>healthgym evaluation</title>" in (out / "report/index.html").read_text()
    # the manifest covers every file, and catches a changed one
    listed = {line.split("  ", 1)[1] for line in (out / "MANIFEST.sha256").read_text().splitlines()}
    assert listed == names - {"MANIFEST.sha256", "manifest.json"}
    assert run("manifest", out, "--check").exit_code == 0
    (out / "datasheet.md").write_text(sheet.replace("**[CUSTODIAN]**", "Our hospital", 1))
    changed = run("manifest", out, "--check")
    assert changed.exit_code == 1 and "changed or missing: datasheet.md" in changed.stderr
    assert run("manifest", out).exit_code == 0  # sealed again after the custodian's edit
    assert run("manifest", out, "--check").exit_code == 0
    _renders_in_a_browser(out / "report" / "index.html", tmp_path / "shot.png")
    # a release never replaces what exists
    again = run("release", trained / "run", "--real", trained / "train.csv", "--holdout",
                trained / "holdout.csv", "-n", 10, "-o", out)  # fmt: skip
    one_line_error(again, "exists", "new (or empty) folder")


def _renders_in_a_browser(index: Path, shot: Path) -> None:
    """The bundle's report opens in headless Chromium as a page with content (skipped where
    there is no Chromium, except in CI: HEALTHGYM_BROWSER_TEST=required)."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        if os.environ.get("HEALTHGYM_BROWSER_TEST") == "required":
            pytest.fail("no chromium to render the release's report")
        return
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}"]
    subprocess.run([*command, "--window-size=1200,2000", index.as_uri()], check=True,
                   timeout=60, capture_output=True)  # fmt: skip
    assert matplotlib.image.imread(shot)[..., :3].std() > 0.01  # not a blank page


class _Copier:
    """A 'model' that releases its training patients (jittered: `noise` > 0)."""

    def __init__(self, train: hg.Cohort, noise: float) -> None:
        self.train, self.noise, self.schema = train, noise, train.schema

    def sample(self, n: int, seed: int = 0) -> hg.Cohort:
        table = self.train.table.copy()
        rng = np.random.default_rng(seed)
        for v in self.schema.variables:
            if v.kind == "real" and v.role != "static" and self.noise:
                table[v.name] = table[v.name] + rng.normal(0, self.noise, len(table))
        table["pid"] = table["pid"] + 10_000
        return hg.Cohort(table, self.schema)


@pytest.mark.parametrize("noise, reason", [(0.0, "exact copies"), (0.01, "membership")])
def test_a_release_of_memorised_patients_is_refused(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, noise: float, reason: str
) -> None:
    train = hg.load(trained / "run").schema
    real = hg.Cohort(pd.read_csv(trained / "train.csv"), train)
    holdout = hg.Cohort(pd.read_csv(trained / "holdout.csv"), train)
    monkeypatch.setattr(hg, "load", lambda run: _Copier(real, noise))
    with pytest.raises(ReleaseRefused, match=reason):
        build_release(trained / "run", real, holdout, 300, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.iterdir())
    cli = run("release", trained / "run", "--real", trained / "train.csv", "--holdout",
              trained / "holdout.csv", "-n", 300, "-o", tmp_path / "b2")  # fmt: skip
    one_line_error(cli, "refused", reason)
    assert not (tmp_path / "b2").exists()


def test_copied_records_ignores_records_the_population_shares() -> None:
    train = make_cohort(50, length=3, seed=1)
    other = make_cohort(50, length=3, seed=2, first_id=500)
    assert copied_records(train, other, other) == []
    assert sorted(copied_records(train, train, other)) == sorted(train.ids)
    assert copied_records(train, train, train) == []  # every record also in the "holdout"


def test_attribute_inference_sees_copies_and_not_a_fresh_sample() -> None:
    train = make_cohort(600, length=2, seed=1)
    holdout = make_cohort(600, length=2, seed=2, first_id=10_000)
    fresh = make_cohort(600, length=2, seed=3, first_id=20_000)
    leaked = attribute_inference(train, train, holdout, sensitive=["died"])
    safe = attribute_inference(train, fresh, holdout, sensitive=["died"])
    assert leaked["attacks"][0]["synthetic"] == 1.0 and leaked["reading"] == "poor"
    assert abs(safe["max_excess"]) < 0.05 and safe["attacks"][0]["quasi_identifiers"] == [
        "sex", "unit", "age"]  # fmt: skip
    with pytest.raises(ValueError, match="static variables"):
        attribute_inference(train, fresh, holdout, sensitive=["hr"])


def test_the_whole_path_from_an_omop_cdm_to_a_release(tmp_path: Path) -> None:
    """OMOP CDM -> `healthgym cohort` -> train -> release: the datasheet names the source and
    the bundle carries the cohort definition."""
    demo = hg.datasets.demo()
    small = hg.Cohort(demo.table[demo.table["RecordID"].isin(demo.ids[:300])], demo.schema)
    cdm = write_demo_cdm(tmp_path / "cdm.duckdb", cohort=small)
    (tmp_path / "icu.yaml").write_text(run("cohort", "--example", "omop-icu-demo").output)
    built = tmp_path / "icu.parquet"
    assert (
        run("cohort", tmp_path / "icu.yaml", "--db", f"duckdb:///{cdm}", "-o", built).exit_code == 0
    )
    table = pd.read_parquet(built)
    ids = table["RecordID"].unique()
    table[table["RecordID"].isin(ids[:240])].to_parquet(tmp_path / "train.parquet")
    table[table["RecordID"].isin(ids[240:])].to_parquet(tmp_path / "holdout.parquet")
    schema = tmp_path / "icu.schema.yaml"
    train = hg.Cohort(pd.read_parquet(tmp_path / "train.parquet"), hg.Schema.from_yaml(schema))
    hg.HealthGym(width=8, epochs=1, seed=0).fit(train, tmp_path / "run")
    out = tmp_path / "bundle"
    r = run("release", tmp_path / "run", "--real", tmp_path / "train.parquet", "--holdout",
            tmp_path / "holdout.parquet", "-n", 60, "-o", out, "--max-mia", 0.9,
            "--cohort", built)  # fmt: skip
    assert r.exit_code == 0, r.output
    sheet = (out / "datasheet.md").read_text()
    assert "built by `healthgym cohort`" in sheet and f"duckdb:///{cdm}" in sheet
    assert (out / "cohort_definition.yaml").read_text() == (tmp_path / "icu.yaml").read_text()
