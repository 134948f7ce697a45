"""A cohort definition (YAML): which stays, on which grid, which variables, aggregated how.

Read and checked before the database is touched, so a typo costs one line, not a query. The
names a definition may use (tables, domains, static `from`s) are the source layout's
(`layouts.py`); this module checks the shape and the values that need no database.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.schema import KINDS
from .layouts import LAYOUTS, Layout

AGGREGATES = ("mean", "min", "max", "last", "first", "sum", "count", "any")
#: Duration units: seconds per unit.
UNITS = {"s": 1, "min": 60, "m": 60, "h": 3600, "d": 86400}
#: A plain SQL name (table, schema): never quoted from user text into a query otherwise.
SQL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Grid steps per stay at most (a 1-minute grid over a year is 525,600).
MAX_STEPS = 100_000


@dataclass(frozen=True)
class Item:
    """A variable read from a domain's rows (a static one is aggregated over the window)."""

    name: str
    domain: str
    concepts: tuple[int, ...]
    agg: str
    role: str = "dynamic"
    kind: str | None = None
    unit: int | str | None = None
    range: tuple[float, float] | None = None
    empty: str = "missing"  # what a step without events reads: "missing" or "zero"


@dataclass(frozen=True)
class Static:
    """A stay's baseline value computed by the layout (`from`), e.g. age at the stay's start."""

    name: str
    source: str


@dataclass(frozen=True)
class Definition:
    source: str
    stay_table: str
    stay_concepts: tuple[int, ...]
    step_s: int
    window_s: int
    statics: tuple[Static, ...]
    items: tuple[Item, ...]  # static items (role "static") first, then the time-varying ones
    id: str = "stay_id"
    time: str = "step"
    database_schema: str | None = None
    text: str = field(default="", compare=False)  # the YAML as read (provenance)

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.source]

    @property
    def steps(self) -> int:
        return math.ceil(self.window_s / self.step_s)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.statics] + [i.name for i in self.items]


def read_definition(path: str | Path) -> Definition:
    """The definition in `path`; a ValueError naming the file and the field when it is wrong."""
    path = Path(path)
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    try:
        return parse_definition(raw, text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def parse_definition(raw: Any, text: str = "") -> Definition:
    """A Definition from the parsed YAML (see docs/cohorts.md for every field)."""
    d = _mapping(raw, "the definition")
    _known(d, {"source", "schema", "id", "time", "stay", "step", "window", "static", "variables"})
    source = d.get("source")
    if source not in LAYOUTS:
        raise ValueError(f"source must be one of {sorted(LAYOUTS)}, got {source!r}")
    layout = LAYOUTS[source]
    stay = _mapping(d.get("stay", {"table": layout.default_stay}), "stay")
    _known(stay, {"table", "concepts"}, "stay")
    table = stay.get("table", layout.default_stay)
    if table not in layout.stays:
        raise ValueError(f"stay.table must be one of {sorted(layout.stays)}, got {table!r}")
    step_s, window_s = duration(d.get("step"), "step"), duration(d.get("window"), "window")
    if step_s > window_s:
        raise ValueError(f"step ({d['step']}) is longer than the window ({d['window']})")
    if window_s / step_s > MAX_STEPS:
        raise ValueError(f"window / step is {window_s / step_s:.0f} steps; at most {MAX_STEPS}")
    schema = d.get("schema")
    if schema is not None and not (isinstance(schema, str) and SQL_NAME.match(schema)):
        raise ValueError(f"schema must be a plain database schema name, got {schema!r}")
    statics, items = [], []
    for i, entry in enumerate(_list(d.get("static", []), "static")):
        e = _mapping(entry, f"static[{i}]")
        if "from" in e:
            _known(e, {"name", "from"}, f"static[{i}]")
            if e["from"] not in layout.statics:
                raise ValueError(
                    f"static {e.get('name')!r}: from must be one of {sorted(layout.statics)}, "
                    f"got {e['from']!r}"
                )
            statics.append(Static(_name(e, f"static[{i}]"), e["from"]))
        else:
            items.append(_item(e, layout, f"static[{i}]", role="static"))
    for i, entry in enumerate(_list(d.get("variables"), "variables")):
        items.append(_item(_mapping(entry, f"variables[{i}]"), layout, f"variables[{i}]"))
    if not items:
        raise ValueError("variables lists nothing: a cohort needs at least one variable")
    definition = Definition(
        source=source,
        stay_table=table,
        stay_concepts=_concepts(stay.get("concepts", []), "stay.concepts", allow_empty=True),
        step_s=step_s,
        window_s=window_s,
        statics=tuple(statics),
        items=tuple(items),
        id=_column(d.get("id", "stay_id"), "id"),
        time=_column(d.get("time", "step"), "time"),
        database_schema=schema,
        text=text,
    )
    names = [definition.id, definition.time, *definition.names]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"these names are used twice: {twice}")
    return definition


def duration(value: Any, what: str) -> int:
    """Seconds in a duration such as `4h`, `30min`, `1d` or `90s`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d)\s*", str(value))
    if value is None or not match:
        raise ValueError(f"{what} must be a duration such as 4h, 30min, 1d; got {value!r}")
    seconds = float(match[1]) * UNITS[match[2]]
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"{what} must be a whole number of seconds >= 1, got {value!r}")
    return int(seconds)


def _item(e: dict[str, Any], layout: Layout, where: str, role: str | None = None) -> Item:
    _known(
        e, {"name", "domain", "concepts", "agg", "role", "kind", "unit", "range", "empty"}, where
    )
    name = _name(e, where)
    where = f"variable {name!r}"
    domain = e.get("domain")
    if domain not in layout.domains:
        raise ValueError(f"{where}: domain must be one of {sorted(layout.domains)}, got {domain!r}")
    agg = e.get("agg", "mean")
    if agg not in AGGREGATES:
        raise ValueError(f"{where}: agg must be one of {AGGREGATES}, got {agg!r}")
    if role is None:
        role = e.get("role", "dynamic")
        if role not in ("dynamic", "action"):
            raise ValueError(f"{where}: role must be dynamic or action, got {role!r}")
    elif "role" in e:
        raise ValueError(f"{where}: a static entry takes no role")
    kind = e.get("kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    if agg in ("any", "count") and kind not in (None, "real" if agg == "count" else "binary"):
        raise ValueError(f"{where}: agg {agg} gives a {'count' if agg == 'count' else '0/1'}")
    unit = e.get("unit")
    if unit is not None and not isinstance(unit, int | str):
        raise ValueError(f"{where}: unit must be one unit id or name, got {unit!r}")
    empty = e.get("empty", "zero" if agg in ("count", "any") else "missing")
    if empty not in ("missing", "zero") or (agg in ("count", "any") and empty != "zero"):
        raise ValueError(f"{where}: empty must be missing or zero (count and any: zero)")
    bounds = e.get("range")
    if bounds is not None:
        if not (
            isinstance(bounds, list)
            and len(bounds) == 2
            and all(isinstance(b, int | float) and math.isfinite(b) for b in bounds)
            and bounds[0] <= bounds[1]
        ):
            raise ValueError(f"{where}: range must be [low, high] with low <= high, got {bounds}")
        bounds = (float(bounds[0]), float(bounds[1]))
    return Item(
        name=name,
        domain=domain,
        concepts=_concepts(e.get("concepts"), f"{where}: concepts"),
        agg=agg,
        role=role,
        kind=kind,
        unit=unit,
        range=bounds,
        empty=empty,
    )


def _concepts(value: Any, where: str, allow_empty: bool = False) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    if value is None or (not items and not allow_empty):
        raise ValueError(f"{where} must list at least one concept (or item) id")
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in items):
        raise ValueError(f"{where} must be whole numbers, got {value!r}")
    return tuple(items)


def _name(e: dict[str, Any], where: str) -> str:
    name = e.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where} needs a name")
    return name


def _column(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a column name, got {value!r}")
    return value


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a mapping (key: value), got {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list, got {type(value).__name__}")
    return value


def _known(d: dict[str, Any], keys: set[str], where: str = "the definition") -> None:
    unknown = sorted(set(d) - keys)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(keys)}")
