"""What several test modules share: small cohorts made on the spot. One module, imported as
`helpers` (tests/ is on the path through its conftest.py)."""

import numpy as np
import pandas as pd
from click.testing import CliRunner, Result

import healthgym as hg
from healthgym.cli import main
from healthgym.console import MAX_MESSAGE

#: Settings that train each family in a second or two (the safety tests' runs).
TINY_FAMILIES = {
    "healthgym": {"width": 8, "epochs": 2},
    "gan": {"hidden": 8, "noise_dim": 4, "batch_size": 8, "epochs": 2, "calibration_patients": 16},
    "v1": {"hidden": 8, "noise_dim": 4, "batch_size": 8, "epochs": 2},
}


def run(*args: object) -> Result:
    """The `healthgym` command with these arguments, in this process."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r: Result, *fragments: str) -> str:
    """The result is exit code 2 with one short line ``error: ...`` holding ``fragments``."""
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()  # `train` says what it trains first
    assert lines and lines[-1].startswith("error: "), r.stderr
    assert not any(line.startswith("error") for line in lines[:-1]), r.stderr
    assert len(lines[-1]) <= len("error: ") + MAX_MESSAGE and "Traceback" not in r.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def make_table(n_patients: int = 6, seed: int = 0, variable_length: bool = True) -> pd.DataFrame:
    """A small mixed-type long table: static sex/unit, dynamic skewed lab, vitals, GCS-like cat."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        length = int(rng.integers(2, 6)) if variable_length else 5
        sex, unit = rng.choice(["Female", "Male"]), rng.choice(["MICU", "SICU", "CCU"])
        age = float(np.round(rng.uniform(20, 90), 1))
        for t in range(length):
            rows.append(
                {
                    "pid": 100 + p,
                    "hour": t,
                    "sex": sex,
                    "unit": unit,
                    "age": age,
                    "hr": float(np.round(rng.normal(85, 15), 1)),
                    "lactate": float(rng.gamma(1.5, 1.2)) if rng.random() > 0.3 else np.nan,
                    "vent": int(rng.integers(0, 2)),
                    "gcs": int(rng.integers(3, 6)),
                }
            )
    return pd.DataFrame(rows)


SCHEMA = hg.Schema(
    "pid",
    "t",
    [
        hg.Variable("sex", "binary", "static", levels=["F", "M"]),
        hg.Variable("unit", "categorical", "static", levels=["CCU", "MICU", "SICU"]),
        hg.Variable("age", "real", "static"),
        hg.Variable("died", "binary", "static", levels=[0, 1]),
        hg.Variable("hr", "real"),
        hg.Variable("map", "real"),
        hg.Variable("lactate", "real", missing="flag"),
        hg.Variable("gcs", "categorical", levels=["low", "mid", "high"]),
        hg.Variable("vent", "binary", levels=[0, 1]),
    ],
)
GCS_SHARES = [0.6, 0.3, 0.1]


def make_cohort(n=300, length=8, seed=0, min_length=None, first_id=0) -> hg.Cohort:
    """Patients with AR(1) vitals around a personal level and trend, sticky categories."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length or length, length + 1, n)
    rows = []
    for p, steps in enumerate(lengths):
        age, level, slope = rng.uniform(20, 90), rng.normal(85, 10), rng.normal(0, 2)
        sex = rng.choice(["F", "M"], p=[0.3, 0.7])
        unit = rng.choice(["CCU", "MICU", "SICU"], p=[0.2, 0.5, 0.3])
        died = int(rng.random() < 1 / (1 + np.exp(-(age - 70) / 8)))
        noise, gcs, vent = 0.0, rng.choice(3, p=GCS_SHARES), rng.integers(2)
        for t in range(steps):
            noise = 0.8 * noise + rng.normal(0, 5)
            hr = level + slope * t + noise
            gcs = gcs if rng.random() < 0.8 else rng.choice(3, p=GCS_SHARES)
            vent = vent if rng.random() < 0.9 else 1 - vent
            lactate = rng.gamma(2, 1 + died) if rng.random() > 0.2 else np.nan
            map_ = 0.5 * hr + rng.normal(30, 3)
            gcs_level = ["low", "mid", "high"][gcs]
            rows.append((first_id + p, t, sex, unit, age, died, hr, map_, lactate, gcs_level, vent))
    return hg.Cohort(pd.DataFrame(rows, columns=["pid", "t", *SCHEMA.names]), SCHEMA)


def small_cohort() -> hg.Cohort:
    """24 patients of `make_table`, the fixture of the model families' tests."""
    return hg.Cohort(make_table(24, seed=3), id="pid", time="hour")


def treated_cohort(n: int = 120, seed: int = 0) -> hg.Cohort:
    """Ventilation drawn at random each step; the next heart rate is ~70 after ventilation,
    ~110 without: a treatment effect the simulator must reproduce."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        sex, length, hr = rng.choice(["F", "M"]), int(rng.integers(3, 7)), 90.0
        for t in range(length):
            vent = int(rng.integers(0, 2))
            rows.append({"pid": p, "t": t, "sex": sex, "hr": round(hr, 1), "vent": vent})
            hr = (70.0 if vent else 110.0) + rng.normal(0, 3)
    table = pd.DataFrame(rows)
    cohort = hg.Cohort(table, id="pid", time="t")
    cohort.schema["vent"].role = "action"
    return cohort


def treated_run(folder):
    """A small default model of `treated_cohort` trained into `folder`, the simulator tests'
    run; returns the folder."""
    hg.HealthGym(width=32, epochs=40, bins=8, fine=4).fit(treated_cohort(), folder, progress=False)
    return folder


def outcome_stays(n: int, seed: int) -> hg.Cohort:
    """Stays of 2 to 8 four-hour steps of HR and MAP, then one outcome row: the measurements
    empty and `survived` or `died` = 1 (a treatment `vaso` on measurement rows)."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(n):
        steps, hr = int(rng.integers(2, 9)), rng.normal(90, 10)
        for t in range(steps):
            hr += rng.normal(0, 4)
            rows.append((pid, t, round(hr, 1), round(0.6 * hr + rng.normal(20, 3), 1),
                         int(rng.random() < 0.3), 0, 0))  # fmt: skip
        died = int(rng.random() < 1 / (1 + np.exp(-(hr - 100) / 5)))
        rows.append((pid, steps, np.nan, np.nan, np.nan, 1 - died, died))
    table = pd.DataFrame(rows, columns=["pid", "t", "HR", "MAP", "vaso", "survived", "died"])
    return hg.Cohort(table, id="pid", time="t")
