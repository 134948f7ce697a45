"""The healthgym command: verbs, outputs, one-line errors with exit code 2."""

import pandas as pd
import pytest
from click.testing import CliRunner

import healthgym as hg
from healthgym.cli import main
from helpers import make_table


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.csv"
    make_table(16, seed=1).to_csv(path, index=False)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_lists_every_verb():
    out = run("--help").output
    for verb in ("schema", "train", "sample", "demo"):
        assert verb in out


def test_schema_prints_and_writes(data, tmp_path):
    r = run("schema", data, "--id", "pid", "--time", "hour")
    assert r.exit_code == 0 and "name: lactate" in r.output and "transform: boxcox" in r.output
    r = run("schema", data, "--id", "pid", "--time", "hour", "-o", tmp_path / "s.yaml")
    assert r.exit_code == 0 and hg.Schema.from_yaml(tmp_path / "s.yaml")["sex"].role == "static"


def test_bad_input_is_one_line_and_exit_2(data, tmp_path):
    r = run("schema", tmp_path / "nope.csv", "--id", "a", "--time", "b")
    assert (r.exit_code, r.output) == (2, f"error: {tmp_path / 'nope.csv'}: file not found\n")
    shuffled = tmp_path / "shuffled.csv"
    pd.read_csv(data).iloc[::-1].to_csv(shuffled, index=False)
    r = run("schema", shuffled, "--id", "pid", "--time", "hour")
    assert r.exit_code == 2 and "is not sorted within patient" in r.output
    assert "Traceback" not in r.output and len(r.output.splitlines()) == 1
    r = run("train", data, "--out", tmp_path / "run")
    assert (r.exit_code, r.output) == (2, "error: give --id and --time (or --schema FILE)\n")


def test_train_then_sample(data, tmp_path):
    out = tmp_path / "run"
    args = (
        "train",
        data,
        "--id",
        "pid",
        "--time",
        "hour",
        "--preset",
        "demo",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        out,
        "--quiet",
    )
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "finished: 1 epochs" in r.output
    r = run(*args)
    assert r.exit_code == 2 and "holds a run; resume it" in r.output
    r = run("sample", out, "-n", 25, "-o", tmp_path / "s.parquet", "--seed", 1)
    assert r.exit_code == 0 and "wrote 25 patients" in r.output
    synth = hg.Cohort.from_parquet(tmp_path / "s.parquet", out / "schema.yaml", strict=False)
    assert len(synth) == 25
    r = run("sample", out, "-n", 3, "-o", tmp_path / "s.csv", "--seed", 1, "--length", 2)
    assert r.exit_code == 0 and len(pd.read_csv(tmp_path / "s.csv")) == 6
    r = run("sample", tmp_path, "-n", 3, "-o", tmp_path / "x.csv")
    assert r.exit_code == 2 and "not a healthgym run folder" in r.output


def test_demo_data_writes_the_bundled_cohort(tmp_path):
    r = run("demo-data", "-o", tmp_path / "demo.csv")
    assert r.exit_code == 0, r.output
    back = hg.Cohort.from_csv(tmp_path / "demo.csv", tmp_path / "demo.schema.yaml")
    shipped = hg.datasets.demo()
    assert back.schema == shipped.schema
    pd.testing.assert_frame_equal(back.table, shipped.table, rtol=1e-6)
