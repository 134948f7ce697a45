"""PhysioNet/CinC Challenge 2012 ICU stays as a regular-grid `Cohort`.

Source: https://physionet.org/content/challenge-2012/ (Silva et al., Computing in Cardiology
2012;39:245-248), Open Data Commons Attribution License v1.0. Each stay holds the first 48 h
of irregular measurements; this module reads them in any published layout, cleans recording
errors, and resamples them to fixed steps so that every patient has the same length.

Decisions, all visible in the module-level tables below:

- Step k covers [k * step, (k + 1) * step) hours; a reading at exactly `hours` (48:00) joins
  the last step, later readings are dropped. Steps without a reading stay NaN (no imputation:
  the schema flags them as missing, so a model learns the measurement pattern too).
- Per-step aggregation (`AGGREGATION`): mean for vitals and labs, the sum for Urine (each
  reading is the output since the previous one, so the sum is the step's output), the
  minimum for GCS (the worst score, as severity scores use it), the maximum for MechVent.
- MechVent is only ever charted as 1, so absence cannot be told from "not charted": the
  variable means "ventilation charted in this step" (1) or not (0) and is never missing.
  Charting is roughly every 3 h, so with 1-h steps a ventilated patient shows gaps of 0.
- Blood pressure: invasive (arterial line) and non-invasive (cuff) readings merge into SysABP,
  DiasABP and MAP; a step uses the invasive mean when it has one, else the cuff mean, because
  the arterial line is the more accurate and continuous measurement.
- Cleaning (`clean`): negatives (-1 is "not recorded"), zeros outside `ZERO_VALID` and values
  outside `VALID_RANGES` are dropped, so their steps become NaN. This removes errors seen in
  set A: Temp -17.8 and 0-3.6 degC, pH 733-735, Height 1.8-17.8 and 366-432 cm, Weight 0-3.4
  kg, zero heart rates and blood pressures, a zero BUN and PaO2.
- Age, Gender, Height and ICUType are static (recorded once, at 00:00). Weight is dynamic: its
  00:00 descriptor is the admission weight and later readings track fluid balance.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.cohort import Cohort
from ..data.schema import Schema, Variable

ID = "RecordID"
TIME = "step"
OUTCOME = "in_hospital_death"
LONG_COLUMNS = ["RecordID", "Time", "Parameter", "Value"]
RECORD_HEADER = "Time,Parameter,Value"
OUTCOME_COLUMNS = ["RecordID", "In-hospital_death"]

STATIC_DESCRIPTORS = ("Age", "Gender", "Height", "ICUType")
GENDER_LEVELS = {0: "Female", 1: "Male"}
ICU_TYPES = {1: "Coronary care", 2: "Cardiac surgery recovery", 3: "Medical", 4: "Surgical"}

# Cuff readings fill the steps where the arterial line (the key) has none.
BP_PAIRS = {"SysABP": "NISysABP", "DiasABP": "NIDiasABP", "MAP": "NIMAP"}

_LABS = [
    "Albumin", "ALP", "ALT", "AST", "Bilirubin", "BUN", "Cholesterol", "Creatinine", "FiO2",
    "Glucose", "HCO3", "HCT", "K", "Lactate", "Mg", "Na", "PaCO2", "PaO2", "pH", "Platelets",
    "SaO2", "TroponinI", "TroponinT", "WBC",
]  # fmt: skip
_VITALS = ["HR", "RespRate", "Temp", "Weight", *BP_PAIRS, *BP_PAIRS.values()]

# How the readings of one parameter within one step become the step's value.
AGGREGATION: dict[str, str] = {
    **dict.fromkeys(_VITALS + _LABS, "mean"),
    "Urine": "sum",
    "GCS": "min",
    "MechVent": "max",
}

# Inclusive physiologically possible ranges; readings outside are recording errors.
VALID_RANGES: dict[str, tuple[float, float]] = {
    "Height": (100.0, 250.0),  # cm
    "Weight": (20.0, 400.0),  # kg
    "Temp": (25.0, 45.0),  # degC
    "pH": (6.5, 8.0),
    "FiO2": (0.21, 1.0),  # fraction
    "SaO2": (1.0, 100.0),  # %
    "GCS": (3.0, 15.0),
}
# Zero is a real reading only for urine output (anuria), respiratory rate (apnoea on the
# ventilator) and Gender (female); elsewhere it marks a disconnected line or an empty field.
ZERO_VALID = {"Urine", "RespRate", "Gender"}

# Box-Cox for the non-negative series with skewness above 1 in set A (heavy right tails);
# min-max for the roughly symmetric or bounded ones (vitals, FiO2, SaO2, pH, Na, ...).
BOXCOX = {
    "ALP", "ALT", "AST", "Bilirubin", "BUN", "Creatinine", "Glucose", "K", "Lactate", "Mg",
    "PaCO2", "PaO2", "Platelets", "TroponinI", "TroponinT", "Urine", "WBC", "Weight",
}  # fmt: skip


def _spec(name: str) -> dict:
    if name == "GCS":
        return {"kind": "categorical", "levels": list(range(3, 16))}
    if name == "MechVent":
        return {"kind": "binary", "levels": [0, 1]}
    return {"kind": "real", "transform": "boxcox" if name in BOXCOX else "minmax"}


# Output variables (without their missing policy, which follows the data), in table order.
VARIABLES: dict[str, dict] = {
    "Age": {"kind": "real", "role": "static"},
    "Gender": {"kind": "binary", "role": "static", "levels": list(GENDER_LEVELS.values())},
    "Height": {"kind": "real", "role": "static"},
    "ICUType": {"kind": "categorical", "role": "static", "levels": list(ICU_TYPES.values())},
    OUTCOME: {"kind": "binary", "role": "static", "levels": [0, 1], "outcome": True},
    **{p: _spec(p) for p in AGGREGATION if p not in BP_PAIRS.values()},
}


def physionet2012(
    source: str | Path,
    outcomes: str | Path | None = None,
    *,
    hours: float = 48,
    step_hours: float = 1,
    variables: Sequence[str] | None = None,
) -> Cohort:
    """Load PhysioNet 2012 stays resampled to `hours / step_hours` steps of `step_hours`.

    `source` is the long CSV (optionally gzipped), a folder of per-record `.txt` files, or the
    published `set-a.tar.gz`. `outcomes` defaults to `Outcomes-a.txt` beside `source`; it is
    read only when `in_hospital_death` is selected. `variables` picks output variables in
    order (see `VARIABLES`); by default every variable with at least one value is kept.
    """
    steps = _n_steps(hours, step_hours)
    names = _select(variables)
    raw = clean(read_physionet2012_long(source))
    table = _resample(raw, steps, step_hours * 60).join(_statics(raw), on=ID)
    if OUTCOME in names:
        path = Path(outcomes) if outcomes is not None else Path(source).parent / "Outcomes-a.txt"
        table = table.join(_read_outcomes(path, table[ID].unique()), on=ID)
    if variables is None:
        names = [n for n in names if table[n].notna().any()]
    else:
        empty = [n for n in names if table[n].isna().all()]
        if empty:
            raise ValueError(f"{source}: selected variables have no values at all: {empty}")
    return Cohort(table[[ID, TIME, *names]], _schema(table, names))


def _schema(table: pd.DataFrame, names: Sequence[str]) -> Schema:
    """The schema of the loader's output: `VARIABLES`, with a missing flag where NaNs occur."""
    variables = [
        Variable(n, **VARIABLES[n], missing="flag" if table[n].isna().any() else "none")
        for n in names
    ]
    return Schema(id=ID, time=TIME, variables=variables)


def read_physionet2012_long(source: str | Path) -> pd.DataFrame:
    """Raw readings `RecordID, minutes, Parameter, Value` (sorted by record and time).

    Accepts the long `RecordID,Time,Parameter,Value` CSV (`.csv` or `.csv.gz`), a folder of
    the challenge's per-record `.txt` files, or a tar archive of them (read in memory).
    """
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{path}: not found (expected a PhysioNet 2012 file or folder)")
    name = path.name.lower()
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"{path}: folder holds no per-record .txt files")
        long = _parse_records(str(path), ((str(f), f.read_text()) for f in files))
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        long = _parse_records(str(path), _tar_texts(path))
    elif name.endswith((".csv", ".csv.gz")):
        long = _read_long_csv(path)
    else:
        raise ValueError(
            f"{path}: unknown format (expected .csv, .csv.gz, .tar.gz or a folder of .txt files)"
        )
    long = long[long["Parameter"] != "RecordID"]
    return long.sort_values([ID, "minutes"], kind="stable", ignore_index=True)


def clean(raw: pd.DataFrame) -> pd.DataFrame:
    """Drop readings that cannot be real: negatives (-1 is "not recorded"), zeros outside
    `ZERO_VALID`, and values outside `VALID_RANGES`; their steps become missing."""
    param, value = raw["Parameter"], raw["Value"]
    low = param.map({p: r[0] for p, r in VALID_RANGES.items()})
    high = param.map({p: r[1] for p, r in VALID_RANGES.items()})
    zero_ok = param.isin(ZERO_VALID) & (value == 0)
    ok = ((value > 0) | zero_ok) & ~(value < low) & ~(value > high)
    return raw[ok].reset_index(drop=True)


def _n_steps(hours: float, step_hours: float) -> int:
    steps = hours / step_hours if step_hours > 0 else 0
    if steps < 1 or abs(steps - round(steps)) > 1e-9:
        raise ValueError(
            f"hours={hours} must be a positive whole multiple of step_hours={step_hours}"
        )
    return round(steps)


def _select(variables: Sequence[str] | None) -> list[str]:
    if variables is None:
        return list(VARIABLES)
    names = [variables] if isinstance(variables, str) else list(variables)
    if not names or len(set(names)) != len(names) or not set(names) <= set(VARIABLES):
        raise ValueError(f"variables must be distinct names from {list(VARIABLES)}, got {names}")
    return names


def _resample(raw: pd.DataFrame, steps: int, step_minutes: float) -> pd.DataFrame:
    """One row per record and step, one column per time series (BP already merged)."""
    ids = raw[ID].unique()
    ts = raw[raw["Parameter"].isin(AGGREGATION) & (raw["minutes"] <= steps * step_minutes)]
    step = np.minimum(ts["minutes"].to_numpy() // step_minutes, steps - 1).astype(np.int64)
    ts = ts.assign(**{TIME: step})
    how = pd.Series(AGGREGATION)
    parts = [
        ts[ts["Parameter"].isin(how.index[how == agg])]
        .groupby([ID, TIME, "Parameter"])["Value"]
        .agg(agg)
        for agg in how.unique()
    ]
    grid = pd.MultiIndex.from_product([ids, range(steps)], names=[ID, TIME])
    wide = pd.concat(parts).unstack("Parameter").reindex(index=grid, columns=list(AGGREGATION))
    for invasive, cuff in BP_PAIRS.items():
        wide[invasive] = wide[invasive].fillna(wide.pop(cuff))
    wide["MechVent"] = wide["MechVent"].fillna(0).astype(np.int64)
    return wide.reset_index()


def _statics(raw: pd.DataFrame) -> pd.DataFrame:
    """One row per record: the descriptors recorded at admission, coded as levels."""
    desc = raw[raw["Parameter"].isin(STATIC_DESCRIPTORS)]
    wide = desc.groupby([ID, "Parameter"])["Value"].first().unstack("Parameter")
    wide = wide.reindex(columns=list(STATIC_DESCRIPTORS))
    wide["Gender"] = wide["Gender"].map(GENDER_LEVELS)
    wide["ICUType"] = wide["ICUType"].map(ICU_TYPES)
    return wide


def _read_outcomes(path: Path, ids: np.ndarray) -> pd.DataFrame:
    """`in_hospital_death` per record from an `Outcomes-*.txt` file; every record needs one."""
    if not path.is_file():
        raise ValueError(
            f"{path}: outcomes file not found; pass outcomes= the challenge's Outcomes-a.txt "
            f"(columns {OUTCOME_COLUMNS}), or leave {OUTCOME!r} out of variables"
        )
    out = pd.read_csv(path)
    if not set(OUTCOME_COLUMNS) <= set(out.columns):
        raise ValueError(
            f"{path}: expected outcome columns {OUTCOME_COLUMNS}, found {list(out.columns)}"
        )
    death = out.set_index(ID)["In-hospital_death"].rename(OUTCOME)
    if death.index.has_duplicates:
        raise ValueError(
            f"{path}: RecordID repeats, e.g. {death.index[death.index.duplicated()][0]}"
        )
    bad = ~death.isin([0, 1])
    if bad.any():
        raise ValueError(f"{path}: In-hospital_death must be 0 or 1, got {death[bad].unique()}")
    lacking = np.setdiff1d(ids, death.index)
    if len(lacking):
        raise ValueError(
            f"{path}: no outcome for {len(lacking)} records, e.g. {lacking[:5].tolist()}"
        )
    return death.astype(np.int64).to_frame()


def _read_long_csv(path: Path) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns.tolist()
    if header != LONG_COLUMNS:
        raise ValueError(f"{path}: expected columns {LONG_COLUMNS}, found {header}")
    table = pd.read_csv(path, dtype={"Time": str, "Parameter": "category"})
    return pd.DataFrame(
        {
            ID: _numbers(table["RecordID"], path, "RecordID").astype(np.int64),
            "minutes": _minutes(table["Time"], path),
            "Parameter": table["Parameter"],
            "Value": _numbers(table["Value"], path, "Value"),
        }
    )


def _tar_texts(path: Path) -> Iterable[tuple[str, str]]:
    try:
        with tarfile.open(path) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".txt")),
                key=lambda m: m.name,
            )
            if not members:
                raise ValueError(f"{path}: archive holds no per-record .txt files")
            for m in members:
                yield f"{path}:{m.name}", tar.extractfile(m).read().decode()
    except tarfile.TarError as e:
        raise ValueError(f"{path}: not a readable tar archive ({e})") from None


def _parse_records(where: str, texts: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Parse per-record files (`Time,Parameter,Value`, the first row `00:00,RecordID,<id>`)
    in one pass: the bodies are concatenated and each row takes the latest RecordID row's id.
    """
    bodies = []
    for name, text in texts:
        header, _, body = text.partition("\n")
        if header.strip() != RECORD_HEADER or ",RecordID," not in body.partition("\n")[0]:
            raise ValueError(
                f"{name}: expected a record file with header {RECORD_HEADER!r} "
                "and a first row '00:00,RecordID,<id>'"
            )
        bodies.append(body if body.endswith("\n") else body + "\n")
    table = pd.read_csv(
        io.StringIO("".join(bodies)),
        names=RECORD_HEADER.split(","),
        dtype={"Time": str, "Parameter": "category"},
    )
    value = _numbers(table["Value"], where, "Value")
    record = value.where(table["Parameter"] == "RecordID").ffill()
    return pd.DataFrame(
        {
            ID: record.astype(np.int64),
            "minutes": _minutes(table["Time"], where),
            "Parameter": table["Parameter"],
            "Value": value,
        }
    )


def _numbers(col: pd.Series, where: object, name: str) -> pd.Series:
    out = pd.to_numeric(col, errors="coerce")
    bad = out.isna() & col.notna()
    if bad.any():
        raise ValueError(f"{where}: column {name} holds non-numbers, e.g. {col[bad].iloc[0]!r}")
    return out.astype(np.float64)


def _minutes(time: pd.Series, where: object) -> np.ndarray:
    """`hh:mm` since admission -> integer minutes (parsing the few distinct times only)."""
    codes, uniques = pd.factorize(time)
    parts = pd.Series(uniques).str.extract(r"^\s*(\d+):(\d\d)\s*$").astype(float)
    bad = parts.isna().any(axis=1)
    if bad.any() or (codes < 0).any():
        example = uniques[bad.to_numpy()][0] if bad.any() else None
        raise ValueError(f"{where}: Time must be hh:mm, got {example!r}")
    return (parts[0] * 60 + parts[1]).to_numpy(np.int64)[codes]
