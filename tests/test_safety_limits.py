"""Nothing lost, second pass (issue 30): untrusted run folders, options checked before work,
the time budget, stale temporaries, names, messages, processes, extras and column types. One
test per case the issue found (cases 1-4 and 11 are in test_safety.py and test_offline.py)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import healthgym as hg
from healthgym.console import MAX_MESSAGE
from healthgym.extras import MissingExtra
from healthgym.models import MODELS
from helpers import TINY_FAMILIES as TINY
from helpers import make_table, one_line_error, run


def table_with_scores(n: int = 20) -> pd.DataFrame:
    """make_table plus `score`, whole numbers 0..39: a real the data write as integers."""
    table = make_table(n, seed=3)
    table["score"] = np.random.default_rng(0).integers(0, 40, len(table))
    return table


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.csv"
    table_with_scores().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict[str, Path]:
    """A tiny run folder of every family (read from, never changed)."""
    cohort = hg.Cohort.from_csv(data, id="pid", time="hour")
    folders = {}
    for family, settings in TINY.items():
        folders[family] = tmp_path_factory.mktemp(family) / "run"
        MODELS[family](**settings).fit(cohort, folders[family], progress=False)
    return folders


# ---- 5. a run folder from someone else cannot demand unbounded memory -----------------------
TAMPERED = {
    "width": ("healthgym", "model.json", ["config", "width"], 10**6),
    "bins": ("healthgym", "tokenizer.json", ["dynamic_columns", 0, "bins"], 10**9),
    "fine": ("healthgym", "tokenizer.json", ["dynamic_columns", 0, "fine"], 10**9),
    "max_length": ("healthgym", "tokenizer.json", ["max_length"], 10**9),
    "positions": ("healthgym", "tokenizer.json", ["max_length"], 5000),
    "decimals": ("healthgym", "tokenizer.json", ["dynamic_columns", 0, "decimals"], 10**9),
    "v1 hidden": ("v1", "model.json", ["config", "hidden"], 10**6),
    "v1 layout": ("v1", "model.json", ["layout", "n_features"], 10**9),
    "v1 max_length": ("v1", "encoder.json", ["max_length"], 10**9),
    "v1 columns": ("v1", "encoder.json", ["dynamic_columns", 0, "end"], 10**9),
    "gan hidden": ("gan", "model.json", ["config", "hidden"], 10**6),
    "gan max_length": ("gan", "encoder.json", ["max_length"], 50_000),
}
MEMORY_CAP = 3 * 2**30  # bytes of address space: torch and the model fit in well under this


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_run_folders_sizes_are_checked_before_anything_is_allocated(case, runs, tmp_path):
    family, name, keys, value = TAMPERED[case]
    folder = tmp_path / "run"
    shutil.copytree(runs[family], folder)
    declared = json.loads((folder / name).read_text())
    place = declared
    for key in keys[:-1]:
        place = place[key]
    place[keys[-1]] = value
    (folder / name).write_text(json.dumps(declared))
    began = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "healthgym", "sample", str(folder), "-n", "50", "-o", "s.csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_capped,
    )
    assert time.monotonic() - began < 60  # seconds, not minutes
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert len(lines[0]) <= 300 and MAX_MESSAGE + len("warning: ") <= 300
    assert not (tmp_path / "s.csv").exists()


def test_sampling_batches_are_bounded_in_patient_steps():
    from healthgym.models.encoding import STEPS_PER_BATCH, patients_per_batch

    assert patients_per_batch(1024, 48) == 1024  # ordinary stays: the batch asked for
    assert patients_per_batch(1024, 90_000) * 90_000 <= STEPS_PER_BATCH
    assert patients_per_batch(1024, 10**6) == 1


# ---- 6-8. options checked before any work --------------------------------------------------
@pytest.mark.parametrize("device", ["bogus", "cuda:99", "tpu"])
def test_a_bad_device_is_one_line_before_the_data_is_read(device, data, tmp_path):
    r = run("train", data, "--id", "pid", "--time", "hour", "--device", device, "--out", tmp_path)
    one_line_error(r, repr(device))
    assert "Cohort(" not in r.stderr  # refused before the data was read
    assert not any(tmp_path.iterdir())


def test_cuda_on_a_machine_without_it_is_one_line(data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run("train", data, "--id", "pid", "--time", "hour", "--device", "cuda", "--out", tmp_path)
    one_line_error(r, "sees no CUDA GPU")


@pytest.mark.parametrize("seed", ["-1", str(2**64), "1.5"])
def test_every_seed_follows_one_rule(seed, runs, data, tmp_path):
    for args in (
        ("sample", runs["healthgym"], "-n", 2, "-o", tmp_path / "s.csv", "--seed", seed),
        ("train", data, "--id", "pid", "--time", "hour", "--out", tmp_path / "r", "--seed", seed),
        ("demo", "--out", tmp_path / "demo", "--seed", seed),
    ):
        r = run(*args)
        assert r.exit_code == 2 and "'--seed'" in r.output and "Traceback" not in r.output
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 2\\*\\*63 - 1"):
        hg.HealthGym(seed=-1)
    model = hg.load(runs["v1"])
    for family in ("healthgym", "gan", "v1"):
        with pytest.raises(ValueError, match="seed must be an integer from 0"):
            next(iter(hg.load(runs[family]).sample_batches(2, seed=2**64)))
    assert len(model.sample(2, seed=2**63 - 1).ids) == 2  # the largest seed works


@pytest.mark.parametrize("minutes", ["0", "-1", "nan", "inf", "soon"])
def test_a_budget_is_a_positive_number_of_minutes(minutes, data, tmp_path):
    args = ("--id", "pid", "--time", "hour", "--out", tmp_path / "r", "--max-minutes", minutes)
    r = run("train", data, *args)
    assert r.exit_code == 2 and "'--max-minutes'" in r.output and "Traceback" not in r.output
    r = run("demo", "--out", tmp_path / "demo", "--minutes", minutes)
    assert r.exit_code == 2 and "'--minutes'" in r.output
    assert not any(tmp_path.iterdir())  # refused before anything was trained or written
    with pytest.raises(ValueError, match="max_minutes must be a number > 0"):
        hg.HealthGym().fit(hg.Cohort.from_csv(data, id="pid", time="hour"), max_minutes=0)


def test_demo_with_no_patients_is_refused_at_once(tmp_path):
    began = time.monotonic()
    r = run("demo", "--out", tmp_path / "demo", "-n", 0)
    assert r.exit_code == 2 and "'-n'" in r.output
    assert time.monotonic() - began < 5 and not (tmp_path / "demo").exists()


# ---- 9. the budget is the command's wall time, set-up included ------------------------------
def test_the_budget_counts_set_up_and_the_log_says_how_long_it_took(data, tmp_path, monkeypatch):
    from healthgym.models.healthgym.model import HealthGym

    fit_encoding = HealthGym._fit_encoding

    def slow_set_up(self, *args, **kwargs):
        time.sleep(2.0)  # a set-up longer than the whole budget (1.2 s)
        return fit_encoding(self, *args, **kwargs)

    monkeypatch.setattr(HealthGym, "_fit_encoding", slow_set_up)
    r = run(
        "train", data, "--id", "pid", "--time", "hour", "--max-minutes", 0.02,
        "--out", tmp_path / "r",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "budget 0.02 min of wall time: set-up took" in r.stderr
    took = float(r.stderr.split("set-up took ")[1].split(" s")[0])
    assert took >= 2.0
    assert "stopped early (max_minutes): 0 epochs, 1 optimizer steps" in r.stdout  # one step


# ---- 10. temporaries of a killed process ------------------------------------------------------
DEAD_PID = 2**22 + 1  # above Linux's largest pid: no such process


def test_stale_temporaries_of_dead_processes_are_removed(runs, tmp_path):
    stale = tmp_path / f".s.csv.{DEAD_PID}.tmp"
    stale.write_text("half a file")
    live = tmp_path / ".s.csv.1.tmp"  # pid 1 is alive: its file stays
    live.write_text("being written")
    assert run("sample", runs["healthgym"], "-n", 3, "-o", tmp_path / "s.csv").exit_code == 0
    assert not stale.exists() and live.read_text() == "being written"
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / f".part-000000.parquet.{DEAD_PID}.tmp").write_text("half a part")
    r = run("sample", runs["healthgym"], "-n", 3, "-o", f"{parts}/", "--seed", 1)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in parts.iterdir()) == ["part-000000.parquet"]


def test_a_folder_with_leftovers_names_them(runs, tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "part-000000.parquet").write_text("from a run that was killed")
    one_line_error(
        run("sample", runs["healthgym"], "-n", 3, "-o", f"{parts}/", "--seed", 1),
        "part-000000.parquet",
    )


# ---- 12. demo-data names its schema after the whole stem --------------------------------------
def test_demo_data_never_replaces_an_unrelated_schema(tmp_path):
    other = tmp_path / "patients.schema.yaml"
    other.write_text("# my own schema\n")
    (tmp_path / "patients.v2.csv").write_text("old")
    r = run("demo-data", "-o", tmp_path / "patients.v2.csv", "--overwrite")
    assert r.exit_code == 0, r.output
    assert other.read_text() == "# my own schema\n"
    assert (tmp_path / "patients.v2.schema.yaml").exists()
    (tmp_path / "dd.schema.yaml").write_text("x")
    one_line_error(run("demo-data", "-o", tmp_path / "dd.txt"), ".csv or .parquet")


# ---- 13. names and schemas a table cannot have ------------------------------------------------
def test_a_parquet_column_without_a_name_is_refused(tmp_path):
    table = make_table(4)
    table[""] = 1.0
    table.to_parquet(tmp_path / "t.parquet")
    one_line_error(
        run("schema", tmp_path / "t.parquet", "--id", "pid", "--time", "hour"), "no name"
    )


def test_duplicate_csv_headers_are_refused_not_renamed(tmp_path):
    text = make_table(4).to_csv(index=False).replace(",lactate,", ",hr,", 1)
    (tmp_path / "t.csv").write_text(text)
    one_line_error(
        run("schema", tmp_path / "t.csv", "--id", "pid", "--time", "hour"), "more than once", "hr"
    )


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"variables": []}, "lists no variables"),
        ({"varaibles": "typo"}, "unknown schema keys ['varaibles']"),
    ],
)
def test_a_schema_without_variables_or_with_unknown_keys_is_refused(change, fragment, tmp_path):
    cohort = hg.Cohort(make_table(4), id="pid", time="hour")
    (tmp_path / "t.csv").write_text(cohort.table.to_csv(index=False))
    schema = {**cohort.schema.to_dict(), **change}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(schema))
    r = run("train", tmp_path / "t.csv", "--schema", tmp_path / "s.yaml", "--out", tmp_path / "r")
    one_line_error(r, fragment)
    assert not (tmp_path / "r").exists()


def test_schema_options_that_cannot_mean_anything_are_refused(data):
    r = run("schema", data, "--id", "pid", "--time", "hour", "--max-integer-levels", -1)
    assert r.exit_code == 2 and "'--max-integer-levels'" in r.output
    one_line_error(run("schema", data, "--id", "pid", "--time", "pid"), "must differ", "'pid'")


# ---- 14. short messages, quiet exports, plain progress off a terminal --------------------------
def test_long_values_give_short_messages(runs, tmp_path):
    value = "x" * 3000
    line = one_line_error(
        run("sample", runs["healthgym"], "-n", 2, "-o", tmp_path / "s.csv", "--condition", value)
    )
    assert len(line) <= 300


def test_export_prints_no_third_party_warning(data, tmp_path):
    pytest.importorskip("minari")
    r = run("export", data, "--id", "pid", "--time", "hour", "--actions", "vent", "--reward",
            "-hr_next", "-o", tmp_path / "rl")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "eval_env" not in r.stderr and all(len(x) <= 300 for x in r.stderr.splitlines())


def test_training_off_a_terminal_writes_a_plain_line_per_epoch(data, tmp_path):
    r = run("train", data, "--id", "pid", "--time", "hour", "--epochs", 3,
            "--out", tmp_path / "r")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "\r" not in r.stderr
    epochs = [x for x in r.stderr.splitlines() if x.startswith("epoch ")]
    assert [x.split(":")[0] for x in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(len(x) <= 300 for x in r.stderr.splitlines())


# ---- 15. sample --nproc stays within the usable cores ------------------------------------------
def test_sampling_processes_are_capped_at_the_usable_cores(runs, tmp_path, monkeypatch):
    import healthgym.sampling

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(healthgym.sampling, "usable_cores", lambda: 1)
    monkeypatch.setattr(healthgym.sampling, "ProcessPoolExecutor", no_pool)
    with pytest.warns(UserWarning, match="nproc 64 capped at the 1 usable cores"):
        parts = healthgym.sampling.write_parts(
            runs["healthgym"], 8, tmp_path / "p", seed=0, nproc=64, chunk=2
        )
    assert len(parts) == 4 and all(p.exists() for p in parts)


# ---- 16. a missing extra is named in one line ----------------------------------------------------
def test_missing_extras_name_their_pip_command(data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # as if not installed
    r = run("export", data, "--id", "pid", "--time", "hour", "--actions", "vent", "--reward",
            "-hr_next", "-o", tmp_path / "rl")  # fmt: skip
    one_line_error(r, "pip install 'healthgym[rl]'", "minari")
    assert not (tmp_path / "rl").exists()
    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(MissingExtra, match=r"pip install 'healthgym\[dp\]'"):
        hg.HealthGym(dp_epsilon=3.0)
    r = run("train", data, "--id", "pid", "--time", "hour", "--dp-epsilon", 3, "--out", tmp_path)
    one_line_error(r, "pip install 'healthgym[dp]'")


# ---- 17. integers stay integers ------------------------------------------------------------------
@pytest.mark.parametrize("family", list(TINY))
@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_every_family_writes_the_datas_integers_as_integers(family, suffix, runs, tmp_path):
    assert hg.load(runs[family]).schema["score"].integer
    out = tmp_path / f"s.{suffix}"
    assert run("sample", runs[family], "-n", 20, "-o", out, "--seed", 0).exit_code == 0
    if suffix == "csv":
        scores = pd.read_csv(out, dtype=str)["score"].dropna()
        assert len(scores) and scores.str.fullmatch(r"-?\d+").all(), scores.head()
    else:
        import pyarrow.parquet as pq

        assert str(pq.read_schema(out).field("score").type) == "int64"
    assert os.path.getsize(out) > 0
