"""`healthgym evaluate`: the three outputs, schema resolution, one-line errors with exit 2."""

import json

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from healthgym.cli import main
from helpers import SCHEMA, make_cohort


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    paths = {}
    for name, n, seed, first in (
        ("real", 160, 0, 0),
        ("synth", 120, 1, 1000),
        ("hold", 80, 2, 2000),
    ):
        paths[name] = tmp / f"{name}.csv"
        make_cohort(n=n, length=6, seed=seed, first_id=first).to_csv(paths[name])
    paths["schema"] = tmp / "schema.yaml"
    SCHEMA.to_yaml(paths["schema"])
    run = tmp / "run"
    run.mkdir()
    SCHEMA.to_yaml(run / "schema.yaml")
    matplotlib.image.imsave(run / "learning_dynamics.png", np.random.default_rng(0).random((9, 9)))
    paths["run"] = run
    return paths


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_evaluate():
    assert "evaluate" in run("--help").output


def test_evaluate_writes_report_metrics_and_figures(files, tmp_path):
    out = tmp_path / "report"
    inputs = (files["real"], files["synth"], "--holdout", files["hold"])
    r = run("evaluate", *inputs, "--outcome", "died", "--run", files["run"], "-o", out)
    assert r.exit_code == 0, r.output
    assert "membership-inference AUROC" in r.output and f"report: {out / 'index.html'}" in r.output
    assert (out / "index.html").read_text().count("data:image/png;base64,") >= 8
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["utility"]["outcome"] == "died" and "mia_auroc" in metrics["privacy"]
    pngs = {p.name for p in out.glob("*.png")}
    assert {"marginals.png", "privacy.png", "learning_dynamics.png"} <= pngs


@pytest.mark.parametrize("how", ["schema", "infer"])
def test_schema_from_file_or_inferred(files, tmp_path, how):
    args = ["--schema", files["schema"]] if how == "schema" else ["--id", "pid", "--time", "t"]
    r = run("evaluate", files["real"], files["synth"], *args, "-o", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert "note: privacy skipped: no holdout given" in r.output
    assert (tmp_path / "r" / "metrics.json").exists()


def test_bad_inputs_are_one_line_errors(files, tmp_path):
    real, synth, schema = files["real"], files["synth"], files["schema"]
    with_run = (real, synth, "--run", files["run"])
    cases = [
        ((real, tmp_path / "nope.csv", "--schema", schema), "file not found"),
        ((real, synth), "give --id and --time"),
        ((*with_run, "--schema", schema), "not both"),
        ((real, synth, "--run", tmp_path), "not a healthgym run folder"),
        ((*with_run, "--outcome", "hr"), "must be a static binary"),
        ((*with_run, "--outcome", "x"), "not a variable"),
        ((real, schema, "--run", files["run"]), "synthetic file"),  # a YAML file, not a table
    ]
    for args, message in cases:
        r = run("evaluate", *args, "-o", tmp_path / "r")
        assert r.exit_code == 2, (args, r.output)
        assert r.output.startswith("error: ") and message in r.output, r.output
        assert len(r.output.splitlines()) == 1 and "Traceback" not in r.output


@pytest.mark.slow
def test_demo_ends_with_an_evaluation(tmp_path):
    r = run("demo", "--out", tmp_path / "demo", "--minutes", 0.02, "-n", 40)
    assert r.exit_code == 0, r.output
    assert "TSTR / TRTR" in r.output and "report: " in r.output
    report = tmp_path / "demo" / "report"
    assert (report / "index.html").exists() and (report / "learning_dynamics.png").exists()
