"""Parallel sampling to a Parquet dataset: the same patients whatever the process count."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pytest

import healthgym as hg
from healthgym.sampling import write_parts
from helpers import make_table


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    cohort = hg.Cohort(make_table(24, seed=2), id="pid", time="hour")
    hg.HealthGym(width=8, epochs=1).fit(cohort, folder, progress=False)
    return folder


def test_parts_are_the_same_patients_for_any_number_of_processes(run, tmp_path):
    one = write_parts(run, 25, tmp_path / "one", seed=3, chunk=10)
    two = write_parts(run, 25, tmp_path / "two", seed=3, chunk=10, nproc=2)
    assert [p.name for p in one] == [p.name for p in two] == [
        "part-000000.parquet", "part-000001.parquet", "part-000002.parquet",
    ]  # fmt: skip
    a, b = pd.read_parquet(tmp_path / "one"), pd.read_parquet(tmp_path / "two")
    pd.testing.assert_frame_equal(a, b)
    assert sorted(a["pid"].unique()) == list(range(1, 26))  # ids follow on across parts
    assert ds.dataset(tmp_path / "one", format="parquet").count_rows() == len(a)
    other = write_parts(run, 25, tmp_path / "other", seed=4, chunk=10)
    assert not pd.read_parquet(other[0]).equals(pd.read_parquet(one[0]))  # the seed matters
    hg.Cohort(a, hg.load(run).schema)  # a valid cohort of the run's schema


def test_refuses_a_folder_that_holds_files(run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_parts(run, 5, tmp_path / "full", seed=0)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli_sample_into_a_folder_of_parts(run, tmp_path):
    from click.testing import CliRunner

    from healthgym.cli import main

    out = tmp_path / "parts"
    r = CliRunner().invoke(main, ["sample", str(run), "-n", "30", "-o", f"{out}/", "--seed", "2"])
    assert r.exit_code == 0, r.output
    two = CliRunner().invoke(
        main, ["sample", str(run), "-n", "30", "-o", str(tmp_path / "two"), "--nproc", "2",
               "--seed", "2"],
    )  # fmt: skip
    assert two.exit_code == 0, two.output
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "two"))
    again = CliRunner().invoke(main, ["sample", str(run), "-n", "3", "-o", f"{out}/"])
    assert again.exit_code == 2 and "not an empty folder" in again.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_writers_end_with_a_killed_parent(run, tmp_path):
    """kill -9 of a parallel sampling run leaves no writing process behind."""
    script = (
        "from healthgym.sampling import write_parts\n"
        "if __name__ == '__main__':\n"
        f"    write_parts({str(run)!r}, 10**7, {str(tmp_path / 'out')!r}, seed=0, nproc=2)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    children: list[int] = []
    for _ in range(600):  # the two writers have started and are sampling
        children = _children(parent.pid)
        if len(children) == 2 and all(_cpu_ticks(c) > 20 for c in children):
            break
        time.sleep(0.1)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    try:
        assert len(children) == 2, children
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(c) for c in children):
            time.sleep(0.1)
        assert not any(_alive(c) for c in children)
    finally:  # never leave a writer running, whatever failed
        for c in children:
            if _alive(c):
                os.kill(c, signal.SIGKILL)
    assert not list((tmp_path / "out").glob(".*.tmp"))  # no part left half-written


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    # the pool's own helper processes (resource tracker) are not writers
    return [c for c in found if "resource_tracker" not in _cmdline(c)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended
