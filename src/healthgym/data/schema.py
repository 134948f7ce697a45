"""What each column of a long patient table is: kind, role, levels, transform, missing policy.

The schema is the contract between a real table, the encoder and every synthetic table. It is
inferred from data (with documented, overridable thresholds), saved as YAML a person can
edit, and checked against any table with errors that name the column and the bad values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .atomic import write_text_atomic  # re-exported for models/ until the refactor lands
from .constraints import check_declaration, check_table
from .row_rules import RowRules

KINDS = ("real", "binary", "categorical")
#: "action": a dynamic variable that is a treatment (offline RL export, the simulator)
ROLES = ("static", "dynamic", "action")
TRANSFORMS = ("boxcox", "log1p", "minmax", "none")
MISSING = ("none", "flag")


@dataclass
class Variable:
    """One column: how it is encoded and generated."""

    name: str
    kind: str
    role: str = "dynamic"
    levels: list[Any] | None = None
    transform: str = "minmax"
    bins: list[float] | None = None
    missing: str = "none"
    # Constraints every sample keeps (healthgym.data.constraints): bounds, monotone steps, start.
    monotone: str | None = None  # "increasing" | "decreasing" (dynamic)
    min: float | None = None  # reals
    max: float | None = None  # reals
    start: Any = None  # the first step's value (dynamic)
    integer: bool = False  # a real whose values are whole numbers: written as integers
    #: known only after the stay (death, discharge): the simulator and the RL export warn
    #: where the observations or a reward show it (`rl.rewards.warn_of_leaks`)
    outcome: bool = False

    def __post_init__(self) -> None:
        where = f"variable {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.role not in ROLES:
            raise ValueError(f"{where}: role must be one of {ROLES}, got {self.role!r}")
        if self.outcome and self.role == "action":
            raise ValueError(f"{where}: a treatment (role: action) cannot be an outcome")
        if self.missing not in MISSING:
            raise ValueError(f"{where}: missing must be one of {MISSING}, got {self.missing!r}")
        if self.bins is not None:
            edges = [float(e) for e in self.bins]
            if self.kind != "categorical" or len(edges) < 3 or np.any(np.diff(edges) <= 0):
                raise ValueError(
                    f"{where}: bins must be >= 3 increasing edges on a categorical, got {self.bins}"
                )
            self.bins = edges
            self.levels = bin_labels(edges)
        if self.kind == "real":
            if self.transform not in TRANSFORMS:
                raise ValueError(
                    f"{where}: transform must be one of {TRANSFORMS}, got {self.transform!r}"
                )
            self.levels = None
        else:
            if self.integer:
                raise ValueError(f"{where}: integer applies to real variables only")
            self.transform = "none"
            if not self.levels:
                raise ValueError(f"{where}: a {self.kind} variable needs its levels")
            self.levels = [_plain(v) for v in self.levels]
            if len(set(self.levels)) != len(self.levels):
                raise ValueError(f"{where}: duplicate levels in {self.levels}")
            if self.kind == "binary" and len(self.levels) != 2:
                raise ValueError(f"{where}: binary needs exactly 2 levels, got {self.levels}")
            if self.kind == "categorical" and len(self.levels) < 2:
                raise ValueError(f"{where}: categorical needs >= 2 levels, got {self.levels}")
        check_declaration(self)

    @property
    def is_static(self) -> bool:
        return self.role == "static"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if self.bins is not None:
            d.pop("levels")  # derived from the edges
        if self.kind != "real":
            d.pop("transform")
        for flag in ("integer", "outcome"):
            if not d[flag]:
                d.pop(flag)
        return d


def bin_labels(edges: list[float]) -> list[str]:
    """Readable interval labels `[a, b)` for bin edges (last bin closed on the right)."""
    fmt = [("inf" if math.isinf(e) else f"{e:g}") for e in edges]
    labels = [f"[{a}, {b})" for a, b in zip(fmt[:-1], fmt[1:], strict=True)]
    labels[-1] = labels[-1][:-1] + "]"
    return labels


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so levels round-trip through YAML."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class Schema:
    """The id and time columns and the variables, in table order."""

    id: str
    time: str
    variables: list[Variable] = field(default_factory=list)
    #: What rows may hold together and where (`data.row_rules`): empty when none declared.
    rows: RowRules = field(default_factory=RowRules)

    def __post_init__(self) -> None:
        names = [v.name for v in self.variables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"schema lists these variables twice: {dupes}")
        if self.id == self.time:
            raise ValueError(f"the id and time columns must differ; both are {self.id!r}")
        clash = sorted({self.id, self.time} & set(names))
        if clash:
            raise ValueError(f"the id/time columns are also listed as variables: {clash}")
        if not isinstance(self.rows, RowRules):
            self.rows = RowRules.from_dict(self.rows)
        if self.rows:
            self.rows.check_declaration(self)

    def __getitem__(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(f"no variable {name!r} in the schema; it has {_describe(self.names)}")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    @property
    def static(self) -> list[Variable]:
        return [v for v in self.variables if v.role == "static"]

    @property
    def dynamic(self) -> list[Variable]:
        """The time-varying variables, treatments (role "action") included."""
        return [v for v in self.variables if v.role != "static"]

    @property
    def actions(self) -> list[Variable]:
        """The treatments: dynamic variables with role "action"."""
        return [v for v in self.variables if v.role == "action"]

    def with_overrides(self, **overrides: dict[str, Any]) -> Schema:
        """A copy with some variables' fields replaced, e.g. `GCS={"kind": "categorical"}`."""
        unknown = set(overrides) - set(self.names)
        if unknown:
            raise ValueError(f"cannot override unknown variables {sorted(unknown)}")
        return replace(
            self,
            variables=[replace(v, **overrides.get(v.name, {})) for v in self.variables],
        )

    # ---- YAML ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "time": self.time,
            "variables": [v.to_dict() for v in self.variables],
        }
        if self.rows:
            out["rows"] = self.rows.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        """Inverse of `to_dict`: unknown keys and an empty variable list are errors (a typo
        such as ``variable:`` must not read as a schema with nothing in it)."""
        unknown = sorted(set(d) - {"id", "time", "variables", "rows"})
        if unknown:
            raise ValueError(
                f"unknown schema keys {unknown}; a schema has id, time, variables (and rows)"
            )
        if not d.get("variables"):
            raise ValueError("the schema lists no variables")
        try:
            variables = [Variable(**v) for v in d["variables"]]
            rules = RowRules.from_dict(d.get("rows") or {})
            return cls(id=d["id"], time=d["time"], variables=variables, rows=rules)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a healthgym schema ({e})") from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The schema as YAML text; written atomically to `path` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            write_text_atomic(Path(path), text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> Schema:
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: schema file not found") from None
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a healthgym schema (expected a mapping)")
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    # ---- checking a table ------------------------------------------------------------------
    def validate(self, table: pd.DataFrame, *, strict: bool = True, part: bool = False) -> None:
        """Raise ValueError naming the column and values where `table` breaks this schema.

        Expects bins already applied (see `apply_bins`). `strict=False` is for generated
        tables: it admits static variables that drift within a patient (faithful Health Gym
        v1 output) and columns that came out entirely missing. `part=True`: the table is some
        patients of a cohort (a chunk of a Parquet file), where a column may be all missing.
        """
        validate_table(table, self, strict=strict, part=part)

    def apply_bins(self, table: pd.DataFrame) -> pd.DataFrame:
        """Map numeric columns of binned variables to their interval labels."""
        out = table
        for v in self.variables:
            if v.bins is None or v.name not in table or not _is_numeric(table[v.name]):
                continue
            if out is table:
                out = table.copy()
            x = table[v.name].to_numpy(dtype=float)
            outside = (x < v.bins[0]) | (x > v.bins[-1])
            if np.any(outside):
                bad = np.unique(x[outside])[:5].tolist()
                raise ValueError(f"column {v.name!r}: values {bad} fall outside bins {v.bins}")
            idx = np.clip(np.searchsorted(v.bins, x, side="right") - 1, 0, len(v.levels) - 1)
            labels = np.asarray(v.levels, dtype=object)[idx]
            labels[np.isnan(x)] = None
            out[v.name] = pd.Series(labels, index=table.index, dtype=object)
        return out


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _describe(values: Any, k: int = 5) -> str:
    """The first ``k`` values and how many there are, each cut to 40 characters."""
    vals = list(values)
    head = ", ".join(_short(repr(_plain(v))) for v in vals[:k])
    return f"[{head}{', ...' if len(vals) > k else ''}] ({len(vals)} in all)"


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


#: Reals are trained and generated as float32: larger magnitudes are rejected like inf.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32(name: str, x: np.ndarray) -> None:
    big = np.abs(x) > FLOAT32_MAX
    if big.any():
        raise ValueError(
            f"column {name!r} holds values beyond the float32 range (|x| > {FLOAT32_MAX:.3g}) "
            f"{_describe(np.unique(x[big]))}"
        )


def validate_table(
    table: pd.DataFrame, schema: Schema, *, strict: bool = True, part: bool = False
) -> None:
    """Every check a long table must pass before it is encoded; see `Schema.validate`."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame, got {type(table).__name__}")
    if len(table) == 0:
        raise ValueError("the table is empty (no rows)")
    missing_cols = [c for c in [schema.id, schema.time, *schema.names] if c not in table.columns]
    if missing_cols:
        raise ValueError(f"columns missing from the table: {_describe(missing_cols)}")
    extra = [c for c in table.columns if c not in {schema.id, schema.time, *schema.names}]
    if extra:
        raise ValueError(
            f"columns not in the schema: {_describe(extra)} (drop them or add them to the schema)"
        )
    ids = table[schema.id]
    if ids.isna().any():
        raise ValueError(f"id column {schema.id!r} has {int(ids.isna().sum())} missing values")
    _check_steps(table, schema)
    for v in schema.variables:
        _check_variable(table, schema, v, strict, part)
    if strict:  # declared bounds, monotone steps and starts (generated tables: enforced)
        check_table(table, schema)


def _check_steps(table: pd.DataFrame, schema: Schema) -> None:
    t = table[schema.time]
    name = schema.time
    if not _is_numeric(t):
        raise ValueError(f"time column {name!r} must hold integer steps, got dtype {t.dtype}")
    tv = t.to_numpy(dtype=float)
    bad = ~np.isfinite(tv) | (tv != np.round(tv))
    if bad.any():
        raise ValueError(
            f"time column {name!r} must hold integer steps; non-integer values "
            f"{_describe(pd.unique(t[bad]))}"
        )
    ids = table[schema.id].to_numpy()
    keys = pd.DataFrame({"id": ids, "t": tv})
    dup = keys.duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(
            f"duplicate ({schema.id}, {name}) pairs: {int(dup.sum())} rows, "
            f"first ({_plain(ids[i])!r}, {int(tv[i])})"
        )
    # Rows of a patient must be contiguous and in increasing step order, without gaps.
    same = ids[1:] == ids[:-1]
    step = np.diff(tv)
    unsorted = same & (step < 0)
    if unsorted.any():
        pid = ids[1:][unsorted][0]
        raise ValueError(
            f"time column {name!r} is not sorted within patient {_plain(pid)!r} "
            "(sort the table by id, then time)"
        )
    starts = np.r_[True, ~same]
    seen_ids = ids[starts]
    if len(pd.unique(seen_ids)) != len(seen_ids):
        raise ValueError(
            f"rows of a patient are not contiguous in column {schema.id!r} (sort by id, then time)"
        )
    gaps = same & (step != 1)
    if gaps.any():
        pid = ids[1:][gaps][0]
        raise ValueError(
            f"time column {name!r} skips steps within patient {_plain(pid)!r}: steps must be "
            "consecutive integers (resample to a regular grid; missing values may be NaN)"
        )


def _check_variable(
    table: pd.DataFrame, schema: Schema, v: Variable, strict: bool, part: bool
) -> None:
    col = table[v.name]
    na = col.isna().to_numpy()
    if na.all() and strict and not part:
        raise ValueError(f"column {v.name!r} is entirely missing (all NaN)")
    if na.any() and v.missing == "none":
        raise ValueError(
            f"column {v.name!r} has {int(na.sum())} missing values but its schema says "
            "missing: none (set missing: flag to model them)"
        )
    if v.kind == "real":
        if not _is_numeric(col):
            bad = col[pd.to_numeric(col, errors="coerce").isna() & col.notna()]
            raise ValueError(
                f"column {v.name!r} is real but holds non-numbers {_describe(pd.unique(bad))}"
            )
        x = col.to_numpy(dtype=float)
        if np.isinf(x).any():
            raise ValueError(f"column {v.name!r} holds infinite values")
        _check_float32(v.name, x)
        if v.transform == "boxcox" and np.any(x < 0):
            raise ValueError(
                f"column {v.name!r} uses boxcox but has negative values "
                f"{_describe(np.unique(x[x < 0]))}; use transform minmax"
            )
        if v.transform == "log1p" and np.any(x <= -1):
            raise ValueError(f"column {v.name!r} uses log1p but has values <= -1")
    else:
        present = pd.unique(col[~na])
        unknown = [u for u in present if not _in_levels(u, v.levels)]
        if unknown:
            raise ValueError(
                f"column {v.name!r} has unknown levels {_describe(unknown)}; "
                f"the schema allows {_describe(v.levels, 10)}"
            )
    if strict and v.role == "static":
        per = pd.DataFrame({"id": table[schema.id].to_numpy(), "v": col.to_numpy()})
        n_distinct = per.groupby("id", sort=False)["v"].nunique(dropna=False)
        drifting = n_distinct[n_distinct > 1]
        if len(drifting):
            raise ValueError(
                f"static column {v.name!r} changes within patients {_describe(drifting.index)}"
            )


def _in_levels(value: Any, levels: list[Any]) -> bool:
    value = _plain(value)
    if value in levels:
        return True
    # 1.0 read from CSV with NaNs should match the integer level 1
    return isinstance(value, float) and value.is_integer() and int(value) in levels


# ---- inference -----------------------------------------------------------------------------
