"""Nothing lost, nothing overwritten (issue 16): run folders, outputs and error messages a
user can trust. One test per case the issue found, plus the probes that held up (malformed
tables, malicious pickles and YAML tags, ``kill -9`` during training then ``--resume``).

Processes killed mid-write or mid-training are forked from this one (no second import of
torch), so each case takes a second or two.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import healthgym as hg
from healthgym.cli import main
from healthgym.console import REPORT_TITLE
from healthgym.models import MODELS
from healthgym.models.conditioning import parse_condition
from healthgym.training import run_folder
from helpers import TINY_FAMILIES as TINY
from helpers import make_table, one_line_error, run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "data.csv"
    make_table(16, seed=1).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    """A tiny HealthGym run folder (sampled from, never changed)."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    cohort = hg.Cohort.from_csv(data, id="pid", time="hour")
    hg.HealthGym(**TINY["healthgym"]).fit(cohort, folder, progress=False)
    return folder


def fork(work: Callable[[], object]) -> int:
    """Run ``work`` in a forked child process (exit code: its SystemExit code); its pid."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            for sig in (signal.SIGTERM, signal.SIGHUP):  # as in a new process (an earlier test
                signal.signal(sig, signal.SIG_DFL)  # may have left a handler in this one)
            work()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            os._exit(code)
    return pid


def wait_for(found: Callable[[], bool], pid: int, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while not found():
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            pytest.fail("the child process ended before it got there")
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("timed out")
        time.sleep(0.01)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def exit_code(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


# ---- 1. a run folder knows what it holds ----------------------------------------------------
def fit_one_step(family: str, data: Path, folder: Path) -> None:
    cohort = hg.Cohort.from_csv(data, id="pid", time="hour")
    MODELS[family](**TINY[family]).fit(cohort, folder, max_minutes=1e-6, progress=False)


@pytest.mark.parametrize("family", ["gan", "healthgym"])
def test_resume_without_model_continues_with_the_runs_family_and_settings(family, data, tmp_path):
    folder = tmp_path / "run"
    fit_one_step(family, data, folder)
    r = run("train", data, "--id", "pid", "--time", "hour", "--out", folder, "--resume", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"resuming {type(MODELS[family]()).__name__}(" in r.stderr and "finished" in r.output
    assert not list(folder.rglob("*.corrupt"))
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").open()]
    assert steps[0] == 1 and all(b - a in (0, 1) for a, b in zip(steps, steps[1:], strict=False))
    assert json.loads((folder / "model.json").read_text())["config"]["epochs"] == 2
    assert isinstance(hg.load(folder), MODELS[family])


def test_a_refused_resume_changes_nothing_in_the_folder(data, tmp_path):
    folder = tmp_path / "run"
    fit_one_step("gan", data, folder)
    before = snapshot(folder)
    other = tmp_path / "other.csv"
    make_table(16, seed=2).to_csv(other, index=False)
    args = ("--id", "pid", "--time", "hour", "--out", folder, "--resume", "--quiet")
    cases = [
        ((data, *args, "--model", "healthgym"), "holds a 'gan' run, not 'healthgym'"),
        ((data, *args, "--batch-size", 4), "cannot resume with other settings (batch_size 8 -> 4)"),
        ((other, *args), "the data differs from the run's"),
    ]
    for cli_args, message in cases:
        one_line_error(run("train", *cli_args), message)
        assert snapshot(folder) == before  # nothing renamed, rewritten or added


def test_the_python_api_refuses_other_settings_before_writing(data, tmp_path):
    folder = tmp_path / "run"
    fit_one_step("healthgym", data, folder)
    before = snapshot(folder)
    cohort = hg.Cohort.from_csv(data, id="pid", time="hour")
    with pytest.raises(ValueError, match=r"other settings \(width 8 -> 16\)"):
        hg.HealthGym(**{**TINY["healthgym"], "width": 16}).fit(cohort, folder, resume=True)
    assert snapshot(folder) == before


def test_resume_where_there_is_nothing_to_resume_says_so(data, tmp_path):
    folder = tmp_path / "new"
    args = ("--id", "pid", "--time", "hour", "--epochs", 1, "--batch-size", 8, "--quiet")
    r = run("train", data, *args, "--out", folder, "--resume")
    assert r.exit_code == 0, r.output
    assert "warning: " in r.stderr and "nothing to resume" in r.stderr
    assert "starting a new run" in r.stderr and (folder / "weights.pt").exists()


def test_kill_9_during_training_then_resume(data, tmp_path):
    folder = tmp_path / "run"
    args = ("train", data, "--id", "pid", "--time", "hour", "--batch-size", 4, "--quiet")
    pid = fork(lambda: main([str(a) for a in (*args, "--epochs", 1000, "--out", folder)]))
    wait_for(lambda: any((folder / "checkpoints").glob("ckpt-*.pt")), pid)
    os.kill(pid, signal.SIGKILL)
    assert exit_code(pid) == -signal.SIGKILL
    r = run(*args, "--epochs", 2, "--out", folder, "--resume")
    assert r.exit_code == 0, r.output
    assert not list(folder.rglob("*.corrupt"))
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").open()]
    assert all(b - a in (0, 1) for a, b in zip(steps, steps[1:], strict=False))
    assert len(hg.load(folder).sample(3, seed=0)) == 3


# ---- 2. outputs never clobber -----------------------------------------------------------------
def test_sample_refuses_an_existing_file_unless_overwrite(trained, tmp_path):
    out = tmp_path / "s.csv"
    out.write_text("keep me")
    one_line_error(run("sample", trained, "-n", 3, "-o", out), "exists", "--overwrite")
    assert out.read_text() == "keep me"
    assert run("sample", trained, "-n", 3, "-o", out, "--overwrite").exit_code == 0
    assert len(pd.read_csv(out)["pid"].unique()) == 3


def test_sample_refuses_what_is_not_a_regular_file(trained, tmp_path):
    target = tmp_path / "target.csv"
    target.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for path, kind in ((link, "symbolic link"), (fifo, "named pipe"), ("/dev/null", "device")):
        one_line_error(run("sample", trained, "-n", 3, "-o", path, "--overwrite"), kind)
    assert target.read_text() == "keep me" and link.is_symlink()


def test_outputs_inside_a_run_folder_are_refused(trained, data, tmp_path):
    before = snapshot(trained)
    for name in ("model.json", "s.csv", "checkpoints/s.csv"):
        r = run("sample", trained, "-n", 3, "-o", trained / name, "--overwrite")
        one_line_error(r, "inside the run folder")
    r = run("evaluate", data, data, "--run", trained, "-o", trained / "report")
    one_line_error(r, "inside the run folder")
    assert snapshot(trained) == before


def test_evaluate_output_is_checked_first_and_replaced_whole(trained, data, tmp_path):
    synth = tmp_path / "s.csv"
    assert run("sample", trained, "-n", 16, "-o", synth, "--seed", 0).exit_code == 0
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text("{}")
    (report / "index.html").write_text(f"<html><head>{REPORT_TITLE}</head></html>")
    (report / "stale.png").write_text("from an earlier report")
    evaluate = ("evaluate", data, synth, "--run", trained, "-o")
    one_line_error(run(*evaluate, report), "exists", "--overwrite")
    not_a_report = tmp_path / "mine"
    not_a_report.mkdir()
    (not_a_report / "notes.txt").write_text("keep me")
    one_line_error(run(*evaluate, not_a_report, "--overwrite"), "not an earlier report")
    one_line_error(run(*evaluate, synth, "--overwrite"), "is a regular file, not a folder")
    r = run(*evaluate, report, "--overwrite")
    assert r.exit_code == 0, r.output
    assert not (report / "stale.png").exists() and (report / "index.html").exists()
    assert (not_a_report / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*tmp")) and not list(tmp_path.glob(".*old"))


def test_evaluate_overwrite_never_deletes_a_users_folder(trained, data, tmp_path):
    """Issue 30, case 1: a folder with a metrics.json of its own and the user's files is not
    an earlier report; --overwrite refuses it and leaves every byte."""
    synth = tmp_path / "s.csv"
    assert run("sample", trained, "-n", 16, "-o", synth, "--seed", 0).exit_code == 0
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "metrics.json").write_text("{}")
    (fake / "thesis.txt").write_text("precious")
    (fake / "index.html").write_text(f"<html><head>{REPORT_TITLE}</head></html>")
    before = snapshot(fake)
    r = run("evaluate", data, synth, "--run", trained, "-o", fake, "--overwrite")
    one_line_error(r, "not an earlier report", "thesis.txt")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text("{}")
    (mine / "plot.png").write_bytes(b"my own figure")
    r = run("evaluate", data, synth, "--run", trained, "-o", mine, "--overwrite")
    one_line_error(r, "not an earlier report", "no index.html")
    assert snapshot(fake) == before and (mine / "plot.png").read_bytes() == b"my own figure"


def test_train_never_writes_into_a_users_folder(data, tmp_path):
    """Issue 30, case 2: --out naming a folder with the user's files but no run is refused
    before anything is written (their hand-edited schema.yaml and plot stay as they were)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    schema = run("schema", data, "--id", "pid", "--time", "hour", "-o", mine / "schema.yaml")
    assert schema.exit_code == 0, schema.output
    (mine / "schema.yaml").write_text("# my comments\n" + (mine / "schema.yaml").read_text())
    (mine / "learning_dynamics.png").write_bytes(b"my own plot")
    before = snapshot(mine)
    r = run("train", data, "--schema", mine / "schema.yaml", "--out", mine, "--epochs", 1)
    one_line_error(r, "no healthgym run", "new or empty folder")
    assert snapshot(mine) == before


def test_two_trainings_never_share_a_run_folder(data, tmp_path):
    """Issue 30, case 3: while one process trains into a folder (it holds the folder's lock),
    a second is refused at once; a lock left by a process killed with -9 does not block."""
    run_dir = tmp_path / "run"
    args = ("train", data, "--id", "pid", "--time", "hour", "--epochs", 1, "--quiet")
    with run_folder.locked(run_dir):  # another training process, mid-run
        one_line_error(run(*args, "--out", run_dir), "in use by another training process")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from healthgym.training import run_folder\n"
         "with run_folder.locked(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)",
         str(run_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    one_line_error(run(*args, "--out", run_dir), "in use by another training process")
    holder.kill()  # kill -9: the operating system releases the lock
    holder.wait()
    r = run(*args, "--out", run_dir)
    assert r.exit_code == 0, r.output
    assert (run_dir / "model.json").is_file()


def test_sigterm_during_sample_removes_the_temporary_file(trained, tmp_path):
    out = tmp_path / "big.csv"
    pid = fork(lambda: main(["sample", str(trained), "-n", "10000000", "-o", str(out)]))
    wait_for(lambda: any(_size(p) for p in tmp_path.glob(".big.csv.*.tmp")), pid)
    os.kill(pid, signal.SIGTERM)
    assert exit_code(pid) == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_outputs_by_their_extension(trained, tmp_path):
    for name in ("s.json", "s.csv.gz"):
        r = run("sample", trained, "-n", 3, "-o", tmp_path / name)
        one_line_error(r, "tables are written to .csv or .parquet files")
    one_line_error(run("demo-data", "-o", tmp_path / "d.xlsx"), ".csv or .parquet")
    assert list(tmp_path.iterdir()) == []


def test_schema_and_demo_data_never_replace_a_file_unasked(data, tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("my notes")
    args = ("schema", data, "--id", "pid", "--time", "hour", "-o", mine)
    one_line_error(run(*args), "mine.yaml exists: pass --overwrite")
    assert mine.read_text() == "my notes"
    assert run(*args, "--overwrite").exit_code == 0 and "variables:" in mine.read_text()

    (tmp_path / "d.schema.yaml").write_text("my schema")
    one_line_error(run("demo-data", "-o", tmp_path / "d.csv"), "d.schema.yaml exists")
    assert not (tmp_path / "d.csv").exists()  # checked before anything is written
    assert (tmp_path / "d.schema.yaml").read_text() == "my schema"
    assert run("demo-data", "-o", tmp_path / "d.csv", "--overwrite").exit_code == 0
    assert (tmp_path / "d.csv").stat().st_size > 0
    assert "variables:" in (tmp_path / "d.schema.yaml").read_text()
    one_line_error(run("demo-data", "-o", tmp_path / "d.csv"), "d.csv exists")


def test_a_failed_write_leaves_no_temporary_file(trained, tmp_path, monkeypatch):
    def disk_full(self, path, *args, **kwargs):
        Path(path).write_text("half a table")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    r = run("sample", trained, "-n", 3, "-o", tmp_path / "s.csv")
    one_line_error(r, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_os_errors_are_one_line_errors_with_exit_code_2(trained, data, tmp_path, monkeypatch):
    folder = tmp_path / "folder"
    folder.mkdir()
    one_line_error(
        run("schema", data, "--id", "pid", "--time", "hour", "-o", folder), "is a folder"
    )
    one_line_error(run("train", data, "--schema", folder, "--out", tmp_path / "r"), "directory")
    afile = tmp_path / "afile"
    afile.write_text("")
    r = run("train", data, "--id", "pid", "--time", "hour", "--out", afile)
    one_line_error(r, "is not a folder")

    def denied(batches, path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr("healthgym.cli.write_tables", denied)
    one_line_error(run("sample", trained, "-n", 3, "-o", tmp_path / "s.csv"), "Permission denied")


# ---- 3. inputs by their real format; short messages naming the file ---------------------------
def test_inputs_by_their_real_format(tmp_path):
    table = make_table(4)
    table.to_csv(tmp_path / "ok.csv.gz", index=False)
    assert run("schema", tmp_path / "ok.csv.gz", "--id", "pid", "--time", "hour").exit_code == 0
    (tmp_path / "t.json").write_text(table.to_json())
    table.to_csv(tmp_path / "t.xlsx", index=False)
    table.to_parquet(tmp_path / "parquet.csv")
    table.to_csv(tmp_path / "csv.parquet", index=False)
    for name, fragment in (
        ("t.json", ".csv, .csv.gz or .parquet"),
        ("t.xlsx", ".csv, .csv.gz or .parquet"),
        ("parquet.csv", "a Parquet file (name it .parquet)"),
        ("csv.parquet", "not a Parquet file"),
    ):
        r = run("schema", tmp_path / name, "--id", "pid", "--time", "hour")
        one_line_error(r, str(tmp_path / name), fragment)


def test_messages_stay_short_on_wide_tables(tmp_path):
    wide = pd.DataFrame({f"column_with_a_long_name_{i}": [1.0, 2.0] for i in range(600)})
    wide.insert(0, "pid", [1, 1])
    wide.insert(1, "hour", [0, 1])
    wide.to_csv(tmp_path / "wide.csv", index=False)
    line = one_line_error(run("schema", tmp_path / "wide.csv", "--id", "x", "--time", "hour"))
    assert "(602 in all)" in line and len(line) < 300
    schema = hg.Schema("pid", "hour", [hg.Variable("column_with_a_long_name_0", "real")])
    schema.to_yaml(tmp_path / "s.yaml")
    r = run("train", tmp_path / "wide.csv", "--schema", tmp_path / "s.yaml", "--out", tmp_path)
    assert "(599 in all)" in one_line_error(r, "columns not in the schema")


def test_values_beyond_float32_are_rejected_like_inf(table):
    table["hr"] = table["hr"].astype(float)
    table.loc[2, "hr"] = 1e300
    with pytest.raises(ValueError, match="'hr' holds values beyond the float32 range"):
        hg.Cohort(table, id="pid", time="hour")  # inferred schema
    schema = hg.Cohort(make_table(), id="pid", time="hour").schema
    with pytest.raises(ValueError, match=r"beyond the float32 range .*\[1e\+300\]"):
        hg.Cohort(table, schema)  # given schema


def test_an_empty_condition_value_is_an_error(trained, tmp_path):
    schema = hg.load(trained).tokenizer.schema
    with pytest.raises(ValueError, match="or sex=NA for missing"):
        parse_condition(schema, "sex=")
    r = run("sample", trained, "-n", 3, "-o", tmp_path / "s.csv", "--condition", "sex=")
    one_line_error(r, "--condition sex= has no value", "sex=NA for missing")


def test_evaluate_errors_name_the_file_at_fault(trained, data, tmp_path):
    bad = make_table(16, seed=1)
    bad["hr"] = bad["hr"].astype(object)
    bad.loc[3, "hr"] = "high"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    evaluate = ("evaluate", "--run", trained, "-o", tmp_path / "report")
    for role, files in (
        ("real", (tmp_path / "bad.csv", data)),
        ("synthetic", (data, tmp_path / "bad.csv")),
        ("holdout", (data, data, "--holdout", tmp_path / "bad.csv")),
    ):
        r = run(*evaluate, *files)
        one_line_error(r, f"{role} file {tmp_path / 'bad.csv'}: column 'hr'", "'high'")


def test_one_stray_text_value_in_a_numeric_column_is_named(tmp_path):
    table = make_table(40, seed=2)
    table["hr"] = table["hr"].astype(object)
    table.loc[5, "hr"] = "unknown"
    table.to_csv(tmp_path / "t.csv", index=False)
    r = run("schema", tmp_path / "t.csv", "--id", "pid", "--time", "hour")
    line = one_line_error(r, "column 'hr' looks numeric except for values ['unknown'] (1 in all)")
    assert "free text" not in line


def test_a_wrong_typed_setting_in_model_json_is_named(trained, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for p in trained.iterdir():
        if p.is_file():
            (folder / p.name).write_bytes(p.read_bytes())
    meta = json.loads((folder / "model.json").read_text())
    meta["config"]["width"] = "wide"
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="setting 'width' must be an integer, got 'wide'"):
        hg.load(folder)
    one_line_error(run("sample", folder, "-n", 3, "-o", tmp_path / "s.csv"), "model.json", "width")
    with pytest.raises(ValueError, match="'betas' must be a list of 2 numbers"):
        hg.HealthGymGAN(betas=[0.5])


@pytest.mark.parametrize("damage", ["empty", "pickle"])
def test_damaged_weights_say_why_and_never_run_code(trained, tmp_path, damage):
    folder = tmp_path / "run"
    folder.mkdir()
    for p in trained.iterdir():
        if p.is_file():
            (folder / p.name).write_bytes(p.read_bytes())
    ran = tmp_path / "pickle-ran"
    payload = b"" if damage == "empty" else pickle.dumps(_Exploit(str(ran)))
    (folder / "weights.pt").write_bytes(payload)
    line = one_line_error(run("sample", folder, "-n", 3, "-o", tmp_path / "s.csv"), "weights.pt")
    want = "the file is empty (0 bytes)" if damage == "empty" else "not a file of tensors"
    assert want in line and "weights_only=False" not in line and not ran.exists()


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_yaml_tags_never_run_code(data, tmp_path):
    ran = tmp_path / "yaml-ran"
    (tmp_path / "s.yaml").write_text(f"!!python/object/apply:os.system ['touch {ran}']\n")
    one_line_error(run("train", data, "--schema", tmp_path / "s.yaml", "--out", tmp_path / "r"))
    assert not ran.exists()


def _malformed() -> dict[str, pd.DataFrame]:
    t = make_table(6)
    cases = {
        "duplicate (pid, hour) pairs": pd.concat([t.iloc[:1], t]).reset_index(drop=True),
        "not sorted": t.iloc[::-1],
        "skips steps": t.assign(hour=t["hour"] * 2),
        "non-integer values": t.assign(hour=t["hour"] + 0.5),
        "missing values": t.assign(pid=t["pid"].where(t.index != 2)),
        "infinite values": t.assign(hr=t["hr"].where(t.index != 2, np.inf)),
        "single value": t.assign(vent=1),
    }
    return cases


@pytest.mark.parametrize("problem", list(_malformed()))
def test_malformed_tables_are_one_line_errors(problem, tmp_path):
    _malformed()[problem].to_csv(tmp_path / "t.csv", index=False)
    one_line_error(run("schema", tmp_path / "t.csv", "--id", "pid", "--time", "hour"), problem)


# ---- 4. schema-true precision, the CLI's thread policy ----------------------------------------
@pytest.mark.parametrize("family", list(MODELS))
def test_every_family_writes_reals_at_the_datas_precision(family):
    table = make_table(24, seed=4)
    table["score"] = np.random.default_rng(0).integers(0, 40, len(table)).astype(float)
    cohort = hg.Cohort(table, id="pid", time="hour")
    assert cohort.schema["score"].kind == "real"
    model = MODELS[family](**{**TINY[family], "epochs": 1}).fit(cohort, progress=False)
    synth = model.sample(30, seed=0).table
    assert (synth["score"] == synth["score"].round()).all()  # whole, like GCS 3..15
    assert np.allclose(synth["hr"], synth["hr"].round(1), rtol=0, atol=1e-9)  # one decimal


def test_encoder_files_without_decimals_decode_unrounded():
    cohort = hg.Cohort(make_table(12, seed=5), id="pid", time="hour")
    encoder = hg.Encoder(cohort.schema).fit(cohort)
    assert {c.name: c.decimals for c in encoder.dynamic_columns if c.kind == "real"} == {
        "hr": 1,
        "lactate": None,
    }
    old = json.loads(json.dumps(encoder.to_dict()))
    for c in old["static_columns"] + old["dynamic_columns"]:
        del c["decimals"]  # an encoder.json written before this release
    encoded = encoder.transform(cohort)
    noisy = encoded.dynamic + 1e-4 * encoded.mask[..., None]
    new = encoder.inverse_transform(encoded.static, noisy, encoded.lengths)
    unrounded = hg.Encoder.from_dict(old).inverse_transform(encoded.static, noisy, encoded.lengths)
    assert (new["hr"] == new["hr"].round(1)).all()
    assert not (unrounded["hr"] == unrounded["hr"].round(1)).all()


def test_cli_sample_runs_under_the_thread_policy(trained, tmp_path, monkeypatch):
    import healthgym.cli

    seen = []
    write = healthgym.cli.write_tables

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return write(*args, **kwargs)

    monkeypatch.setenv("HEALTHGYM_THREADS", "2")
    monkeypatch.setattr("healthgym.cli.write_tables", spy)
    assert run("sample", trained, "-n", 3, "-o", tmp_path / "s.csv").exit_code == 0
    assert seen == [2] and torch.get_num_threads() == 1
