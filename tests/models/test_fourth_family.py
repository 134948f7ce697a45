"""A fourth family, added with one registry line, trains, saves, loads and samples through
the CLI, which names no family: the CLI asks the classes what they can do."""

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from tiny_family import MeansModel

import healthgym as hg
from healthgym.cli import main
from healthgym.models import registry
from helpers import make_table


@pytest.fixture
def with_means(monkeypatch):
    monkeypatch.setitem(registry.MODELS, MeansModel.name, MeansModel)  # the registry line


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "cohort.csv"
    make_table(40, seed=1).to_csv(path, index=False)
    return path


def cli(*args: object) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_fourth_family_trains_saves_loads_and_samples_through_the_cli(with_means, data, tmp_path):
    run = tmp_path / "run"
    out = cli("train", data, "--id", "pid", "--time", "hour", "--model", "means", "--out", run,
              "--quiet")  # fmt: skip
    assert "finished: 40 epochs" in out
    assert hg.load(run).__class__ is MeansModel and registry.family_of(run) is MeansModel
    cli("sample", run, "-n", 300, "-o", tmp_path / "synth.csv", "--seed", 1)
    synth, real = pd.read_csv(tmp_path / "synth.csv"), make_table(40, seed=1)
    # trained: the means are the data's (untrained, every real decodes to the low end of its
    # range and every level is equally likely)
    assert abs(synth["hr"].mean() - real["hr"].mean()) < 5
    assert abs(synth["age"].mean() - real["age"].mean()) < 8
    assert synth["pid"].nunique() == 300
    models = cli("models")
    assert "means: each column's mean" in models and "presets: quick" in models


def test_the_cli_asks_the_fourth_family_what_it_can_do(with_means, data, tmp_path):
    run = tmp_path / "run"
    quick = cli("train", data, "--id", "pid", "--time", "hour", "--preset", "quick", "--out",
                run, "--quiet")  # fmt: skip
    assert "finished: 5 epochs" in quick  # --preset picked the family that has it
    refused = {
        ("--dp-epsilon", "1"): "--model means has no private training",
        ("--stream",): "--stream trains healthgym or v1, not --model means",
        ("--nproc", "2"): "--model means trains in one process",
    }
    for extra, message in refused.items():
        result = CliRunner().invoke(
            main,
            ["train", str(data), "--schema", str(run / "schema.yaml"), "--model", "means",
             "--out", str(tmp_path / "other"), *extra],
        )  # fmt: skip
        assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(
        main, ["sample", str(run), "-n", "5", "-o", str(tmp_path / "s.csv"), "--condition",
               "sex=Male"]
    )  # fmt: skip
    assert result.exit_code == 2 and "--condition needs a run of healthgym or gan" in result.output
