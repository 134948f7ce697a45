"""What the rows of a table may hold together, and where: the schema's `rows` block.

Clinical tables hold rows of different kinds (a dose row, a sample row, an outcome row that
ends the stay) that never mix. The schema says so with **items**, `NAME` (the dynamic variable
is present) or `NAME=LEVEL` (a binary or categorical dynamic variable at that level):

```yaml
rows:
  exclusive:            # never in one row
    - [DOSE, CONC]
    - [survived=1, died=1]
  last: [survived=1, died=1]   # only on a stay's last row (an outcome row)
  first: []                    # only on a stay's first row
  first_patterns:              # whole rows: exactly these items, every other variable empty
    - [MechVent=0, Weight]     # (an admission row that only weighs the patient)
  last_patterns: []
```

A row's **pattern** is every item it holds: `NAME` for each real or categorical variable
present, `NAME=LEVEL` for each binary one (`row_patterns`). A first-only (last-only) pattern is
a kind of row that no single item marks, only the whole row (a Weight-only row where Weight
is also measured later with the vitals).

`infer_rules` finds them where the data show them clearly: a pair of items of different
variables that no row holds together although independence would put at least
`MIN_EXPECTED` rows there; an item that at least `MIN_STAYS` stays hold, only on their last
(first) row; a pattern likewise, where no item rule already places it. `healthgym schema`
prints them for a person to check and edit; training checks the table against them
(`check_rows`), and the evaluation reports how synthetic rows keep them
(`evaluation.row_kinds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from .levels import level_codes

if TYPE_CHECKING:
    from .schema import Schema

MIN_EXPECTED = 30.0
MIN_STAYS = 20


class Pair(list):
    """Two items, written `[A, B]` on one line of the YAML."""


yaml.SafeDumper.add_representer(
    Pair, lambda dumper, pair: dumper.represent_sequence("tag:yaml.org,2002:seq", pair, True)
)


@dataclass(frozen=True)
class RowRules:
    exclusive: tuple[tuple[str, str], ...] = ()
    last: tuple[str, ...] = ()
    first: tuple[str, ...] = ()
    #: whole rows (their items, in the schema's order) only a stay's last / first row holds
    last_patterns: tuple[tuple[str, ...], ...] = ()
    first_patterns: tuple[tuple[str, ...], ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, k) for k in KEYS)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.exclusive:
            out["exclusive"] = [Pair(p) for p in self.exclusive]
        for k in ("last", "first"):
            if getattr(self, k):
                out[k] = list(getattr(self, k))
        for k in ("first_patterns", "last_patterns"):
            if getattr(self, k):
                out[k] = [Pair(p) for p in getattr(self, k)]
        return out

    @classmethod
    def from_dict(cls, d: Any) -> RowRules:
        if not isinstance(d, dict):
            raise ValueError(f"rows must be a mapping with {', '.join(KEYS)}")
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise ValueError(f"rows: unknown keys {unknown}; known: {', '.join(KEYS)}")
        pairs = d.get("exclusive") or []
        if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ValueError(f"rows.exclusive must be a list of [item, item] pairs, got {pairs}")
        lists = {k: d.get(k) or [] for k in KEYS[1:]}
        for k, items in lists.items():
            if not isinstance(items, list):
                raise ValueError(f"rows.{k} must be a list, got {items!r}")
            if k.endswith("_patterns") and not all(isinstance(p, list) for p in items):
                raise ValueError(f"rows.{k} must be a list of [item, ...] rows, got {items!r}")
        rows = {k: tuple(tuple(map(str, p)) for p in lists[k]) for k in KEYS[3:]}
        return cls(
            tuple((str(a), str(b)) for a, b in pairs),
            tuple(map(str, lists["last"])),
            tuple(map(str, lists["first"])),
            rows["last_patterns"],
            rows["first_patterns"],
        )

    def check_declaration(self, schema: Schema) -> None:
        """Every item names a dynamic variable (and one of its levels); a pair joins two
        different variables; an item or pattern is not both last-only and first-only; a
        pattern names a binary variable by its level and any other by its name."""
        for a, b in self.exclusive:
            if item_variable(schema, a) == item_variable(schema, b):
                raise ValueError(f"rows.exclusive [{a}, {b}]: both items are of one variable")
        for item in (*self.last, *self.first):
            item_variable(schema, item)
        for pattern in (*self.last_patterns, *self.first_patterns):
            for item in pattern:
                v = schema[item_variable(schema, item)]
                if (v.kind == "binary") != ("=" in item):
                    how = "NAME=LEVEL" if v.kind == "binary" else "its name alone"
                    raise ValueError(f"rows pattern {list(pattern)}: name {v.name} by {how}")
        for a, b in (("last", "first"), ("last_patterns", "first_patterns")):
            both = sorted(set(getattr(self, a)) & set(getattr(self, b)))
            if both:
                raise ValueError(f"rows: {both} cannot be both last-only and first-only")


#: the rows block's keys, in the order the YAML shows them
KEYS = ("exclusive", "last", "first", "last_patterns", "first_patterns")


def item_variable(schema: Schema, item: str) -> str:
    """The variable an item names; a ValueError when it names no dynamic variable or level."""
    name, _, level = item.partition("=")
    if name not in schema.names or schema[name].is_static:
        raise ValueError(f"rows: item {item!r} names no dynamic variable")
    v = schema[name]
    if level and (v.kind == "real" or level not in [str(x) for x in v.levels]):
        raise ValueError(f"rows: item {item!r}: {name} has no level {level!r}")
    return name


def item_columns(table: pd.DataFrame, schema: Schema) -> tuple[list[str], list[str], np.ndarray]:
    """Items (`NAME` present; `NAME=LEVEL` for each level, and `NAME` for a binary or
    categorical that may be missing), their variables, and the rows-by-items 0/1 matrix."""
    names, owners, columns = [], [], []
    for v in schema.dynamic:
        col = table[v.name]
        present = col.notna().to_numpy()
        if v.kind == "real" or not present.all():
            names.append(v.name)
            owners.append(v.name)
            columns.append(present)
        if v.kind == "real":
            continue
        codes = level_codes(col, v.levels)
        for k, level in enumerate(v.levels):
            names.append(f"{v.name}={level}")
            owners.append(v.name)
            columns.append(codes == k)
    matrix = np.column_stack(columns).astype(np.float64) if columns else np.zeros((len(table), 0))
    return names, owners, matrix


def exclusive_pairs(
    table: pd.DataFrame, schema: Schema, min_expected: float = MIN_EXPECTED
) -> tuple[tuple[str, str], ...]:
    """Pairs of items of different variables no row holds together though independence would
    put >= `min_expected` rows there; a level's pair is left out where its variable's
    presence already makes the pair (`[DOSE, CONC]`, not each dose level with CONC)."""
    names, owners, x = item_columns(table, schema)
    together = x.T @ x
    counts = x.sum(axis=0)
    expected = np.outer(counts, counts) / max(len(x), 1)
    found = {
        (names[a], names[b])
        for a in range(len(names))
        for b in range(a + 1, len(names))
        if owners[a] != owners[b] and together[a, b] == 0 and expected[a, b] >= min_expected
    }
    presence = set(names) & set(owners)

    def general(item: str) -> str:
        name = item.partition("=")[0]
        return name if name in presence else item

    return tuple(
        (a, b)
        for a, b in sorted(found, key=lambda p: (names.index(p[0]), names.index(p[1])))
        if (general(a), general(b)) == (a, b)
        or not (
            (general(a), b) in found
            or (a, general(b)) in found
            or (general(a), general(b)) in found
        )
    )


def holds(table: pd.DataFrame, schema: Schema, item: str) -> np.ndarray:
    """Per row: does it hold the item."""
    name, _, level = item.partition("=")
    v = schema[name]
    if not level:
        return table[name].notna().to_numpy()
    codes = level_codes(table[name], v.levels)
    return codes == [str(x) for x in v.levels].index(level)


def row_patterns(table: pd.DataFrame, schema: Schema) -> list[tuple[str, ...]]:
    """Each row's pattern: `NAME` for every real or categorical dynamic variable present,
    `NAME=LEVEL` for every binary one, in the schema's order."""
    parts = []
    for v in schema.dynamic:
        col = table[v.name]
        present = col.notna().to_numpy()
        if v.kind == "binary":
            labels = np.array([f"{v.name}={level}" for level in v.levels] + [""], dtype=object)
            parts.append(labels[np.where(present, level_codes(col, v.levels), len(v.levels))])
        else:
            parts.append(np.where(present, v.name, ""))
    if not parts:
        return [()] * len(table)
    return [tuple(str(x) for x in row if x) for row in zip(*parts, strict=True)]


def terminal_patterns(
    table: pd.DataFrame, schema: Schema, pats: list[tuple[str, ...]] | None = None
) -> dict[tuple[str, ...], str]:
    """Patterns at least `MIN_STAYS` stays hold, only on their last ("last") or first row."""
    pats = row_patterns(table, schema) if pats is None else pats
    first, last = positions(table, schema)
    frame = pd.DataFrame({"first": first, "last": last, "id": table[schema.id].to_numpy()})
    frame["p"] = pd.Series(pats, dtype=object).to_numpy()
    found = {}
    for p, rows in frame.groupby("p", sort=False):
        if rows["id"].nunique() < MIN_STAYS:
            continue
        if rows["last"].all() and not rows["first"].all():
            found[p] = "last"
        elif rows["first"].all() and not rows["last"].all():
            found[p] = "first"
    return found


def positions(table: pd.DataFrame, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Per row: is it its stay's first row, its last row (rows contiguous, in step order)."""
    ids = table[schema.id].to_numpy()
    change = ids[1:] != ids[:-1]
    return np.r_[True, change], np.r_[change, True]


def infer_rules(
    table: pd.DataFrame, schema: Schema, min_expected: float = MIN_EXPECTED
) -> RowRules:
    """The rules the table shows clearly (see the module docstring)."""
    pairs = exclusive_pairs(table, schema, min_expected)
    names, _, x = item_columns(table, schema)
    first, last = positions(table, schema)
    ids = table[schema.id].to_numpy()
    only: dict[str, list[str]] = {"last": [], "first": []}
    for j, item in enumerate(names):
        rows = x[:, j] > 0
        if len(np.unique(ids[rows])) < MIN_STAYS:
            continue
        if last[rows].all() and not first[rows].all():
            only["last"].append(item)
        elif first[rows].all() and not last[rows].all():
            only["first"].append(item)
    placed = {*only["last"], *only["first"]}
    kinds: dict[str, list[tuple[str, ...]]] = {"last": [], "first": []}
    for pattern, where in terminal_patterns(table, schema).items():
        if not placed.intersection(pattern):  # no item rule already keeps it in place
            kinds[where].append(pattern)
    return RowRules(
        pairs,
        tuple(only["last"]),
        tuple(only["first"]),
        tuple(kinds["last"]),
        tuple(kinds["first"]),
    )


def check_rows(table: pd.DataFrame, schema: Schema) -> None:
    """A ValueError naming the first rule the table breaks and a few of its stays."""
    rules = schema.rows
    if not rules:
        return
    first, last = positions(table, schema)
    ids = table[schema.id].to_numpy()

    def fail(rows: np.ndarray, what: str) -> None:
        if rows.any():
            stays = pd.unique(ids[rows])
            shown = ", ".join(map(str, stays[:5])) + (", ..." if len(stays) > 5 else "")
            raise ValueError(
                f"{what} in {int(rows.sum())} rows (stays {shown}); the schema's rows block "
                "says it never happens: fix the data or the schema"
            )

    for a, b in rules.exclusive:
        fail(holds(table, schema, a) & holds(table, schema, b), f"{a} and {b} together")
    for item in rules.last:
        fail(holds(table, schema, item) & ~last, f"{item} before a stay's last row")
    for item in rules.first:
        fail(holds(table, schema, item) & ~first, f"{item} after a stay's first row")
    if rules.last_patterns or rules.first_patterns:
        pats = row_patterns(table, schema)
        for p in rules.last_patterns:
            of = np.array([q == p for q in pats])
            fail(of & ~last, f"a row of exactly {list(p)} before a stay's last row")
        for p in rules.first_patterns:
            of = np.array([q == p for q in pats])
            fail(of & ~first, f"a row of exactly {list(p)} after a stay's first row")
