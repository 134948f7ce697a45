"""The SQL that turns a definition into a long table, run inside the database.

One query: the stays (start, number of grid steps), the grid (one row per stay and step),
each variable's events placed on the grid (an interval event, an infusion, on every step it
overlaps; a `sum` takes the share of its amount that falls in the step), aggregated per step
and pivoted into columns, then joined with the stay's baseline facts. Rows come out ordered
by stay and step, so the result streams to Parquet without being held. Only names the
definition checked (`SQL_NAME`) or the layout's own reach the SQL; concept ids are integers,
units quoted as literals, column names quoted as identifiers.
"""

from __future__ import annotations

from .definition import Definition, Item
from .layouts import Domain

#: Aggregates whose steps without events read 0, not missing.
ZERO_WHEN_ABSENT = ("count", "any")


def ident(name: str) -> str:
    """A quoted SQL identifier (a column of the output)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: int | str) -> str:
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def epoch(expr: str) -> str:
    return f"CAST(EXTRACT(EPOCH FROM {expr}) AS DOUBLE PRECISION)"


def table(d: Definition, name: str) -> str:
    return d.layout.table(name, d.database_schema)


def stays_sql(d: Definition) -> str:
    """One row per stay: ids, start, end, epoch start and the number of grid steps."""
    st = d.layout.stays[d.stay_table]
    extra = "".join(f", {expr} AS {name}" for name, expr in d.layout.stay_columns.items())
    where = [f"{st.start} IS NOT NULL"]
    if d.stay_concepts:
        where.append(f"{st.concept} IN ({', '.join(map(str, d.stay_concepts))})")
    length = f"{epoch(st.end)} - {epoch(st.start)}"
    steps = (
        f"CASE WHEN {st.end} IS NULL THEN {d.steps} ELSE LEAST({d.steps}, GREATEST(1, "
        f"CAST(CEIL(({length}) / {d.step_s}) AS INTEGER))) END"
    )
    return (
        f"SELECT {st.id} AS stay_id, {st.person} AS person_id, {st.admission} AS admission_id, "
        f"{st.start} AS start_ts, {st.end} AS end_ts, {epoch(st.start)} AS start_s, "
        f"{steps} AS n_steps{extra} FROM {table(d, st.table)} v WHERE {' AND '.join(where)}"
    )


def _key(domain: Domain) -> str:
    return {"person": "person_id", "stay": "stay_id", "admission": "admission_id"}[domain.key]


def _source(d: Definition, item: Item, domain: Domain) -> str:
    """FROM/WHERE joining the item's events to the stays, before the time window."""
    filters = [f"e.{domain.item} IN ({', '.join(map(str, item.concepts))})"]
    if item.unit is not None:
        if domain.unit is None:
            raise ValueError(f"variable {item.name!r}: {domain.table} records no unit")
        filters.append(f"{domain.unit} = {literal(item.unit)}")
    value = _value(domain)
    if item.range is not None:
        filters.append(f"{value} BETWEEN {item.range[0]!r} AND {item.range[1]!r}")
    if item.agg not in ZERO_WHEN_ABSENT and domain.value is not None:
        filters.append(f"{domain.value} IS NOT NULL")
    return (
        f"FROM stays s JOIN {table(d, domain.table)} e ON e.{domain.key_column} = s.{_key(domain)} "
        f"WHERE {' AND '.join(filters)}"
    )


def _value(domain: Domain) -> str:
    return "1.0" if domain.value is None else f"CAST({domain.value} AS DOUBLE PRECISION)"


def events_sql(d: Definition, index: int, item: Item) -> str:
    """(stay_id, step, var, value) of one variable's events on the grid; first/last keep the
    step's first/last event only."""
    domain = d.layout.domains[item.domain]
    t0 = f"({epoch(domain.start)} - s.start_s)"
    value = _value(domain)
    if domain.end is None:
        step = f"CAST(FLOOR({t0} / {d.step_s}) AS INTEGER)"
        inner = (
            f"SELECT s.stay_id, {step} AS step, {t0} AS t, {value} AS value "
            f"{_source(d, item, domain)} AND {t0} >= 0 AND {t0} < s.n_steps * {d.step_s}"
        )
    else:
        t1 = f"COALESCE({epoch(domain.end)} - s.start_s, {t0})"
        x = (
            f"SELECT s.stay_id, s.n_steps, {t0} AS t0, {t1} AS t1, {value} AS value "
            f"{_source(d, item, domain)}"
        )
        lo, hi = f"g.step * {d.step_s}", f"(g.step + 1) * {d.step_s}"
        share = (
            f"CASE WHEN x.t1 > x.t0 THEN x.value * (LEAST(x.t1, {hi}) - GREATEST(x.t0, {lo})) "
            "/ (x.t1 - x.t0) ELSE x.value END"
            if item.agg == "sum"
            else "x.value"
        )
        overlaps = f"x.t0 < {hi} AND (x.t1 > {lo} OR x.t0 >= {lo})"
        inner = (
            f"SELECT x.stay_id, g.step, x.t0 AS t, {share} AS value FROM ({x}) x "
            f"JOIN grid g ON g.stay_id = x.stay_id AND {overlaps}"
        )
    if item.role == "static":  # aggregated over the whole window
        inner = f"SELECT stay_id, 0 AS step, t, value FROM ({inner}) w"
    if item.agg in ("first", "last"):
        order = "t ASC, value ASC" if item.agg == "first" else "t DESC, value DESC"
        inner = (
            "SELECT stay_id, step, t, value FROM (SELECT stay_id, step, t, value, ROW_NUMBER() "
            f"OVER (PARTITION BY stay_id, step ORDER BY {order}) AS rn FROM ({inner}) r) r "
            "WHERE rn = 1"
        )
    return f"SELECT stay_id, step, {index} AS var, value FROM ({inner}) i{index}"


def _aggregate(index: int, agg: str) -> str:
    mine = f"FILTER (WHERE var = {index})"
    return {
        "mean": f"AVG(value) {mine}",
        "min": f"MIN(value) {mine}",
        "max": f"MAX(value) {mine}",
        "sum": f"SUM(value) {mine}",
        "first": f"MAX(value) {mine}",
        "last": f"MAX(value) {mine}",
        "count": f"COUNT(*) {mine}",
        "any": f"CASE WHEN COUNT(*) {mine} > 0 THEN 1 ELSE 0 END",
    }[agg]


def cohort_sql(d: Definition) -> str:
    """The whole long table, ordered by stay and step; columns id, time, statics, variables."""
    facts = [f"{_fact(d, s.source)} AS f{i}" for i, s in enumerate(d.statics)]
    ctes = [
        f"stays AS ({stays_sql(d)})",
        "grid AS (SELECT s.stay_id, g.step FROM stays s "
        "CROSS JOIN LATERAL generate_series(0, s.n_steps - 1) AS g(step))",
    ]
    if facts:
        ctes.append(f"facts AS (SELECT s.stay_id, {', '.join(facts)} FROM stays s)")
    select = [f"g.stay_id AS {ident(d.id)}", f"g.step AS {ident(d.time)}"]
    select += [f"f.f{i} AS {ident(s.name)}" for i, s in enumerate(d.statics)]
    joins = ["JOIN stays s ON s.stay_id = g.stay_id"]
    if facts:
        joins.append("LEFT JOIN facts f ON f.stay_id = g.stay_id")
    for role, alias, keys in (("static", "a", "stay_id"), (None, "b", "stay_id, step")):
        chosen = [(i, it) for i, it in enumerate(d.items) if (it.role == "static") == bool(role)]
        if not chosen:
            continue
        events = " UNION ALL ".join(events_sql(d, i, it) for i, it in chosen)
        columns = ", ".join(f"{_aggregate(i, it.agg)} AS c{i}" for i, it in chosen)
        ctes.append(f"{alias}_events AS ({events})")
        ctes.append(
            f"{alias}_agg AS (SELECT {keys}, {columns} FROM {alias}_events GROUP BY {keys})"
        )
        on = " AND ".join(f"{alias}.{k} = g.{k}" for k in keys.split(", "))
        joins.append(f"LEFT JOIN {alias}_agg {alias} ON {on}")
        for i, it in chosen:
            column = f"{alias}.c{i}"
            if it.empty == "zero":
                column = f"COALESCE({column}, 0)"
            select.append(f"{column} AS {ident(it.name)}")
    return (
        f"WITH {', '.join(ctes)} SELECT {', '.join(select)} FROM grid g {' '.join(joins)} "
        "ORDER BY g.stay_id, g.step"
    )


def units_sql(d: Definition) -> str:
    """Per variable and unit, the number of its rows in the stays: variables without rows and
    variables mixing units are found before the long query runs."""
    parts = []
    for i, item in enumerate(d.items):
        domain = d.layout.domains[item.domain]
        unit = "NULL" if domain.unit is None else f"CAST({domain.unit} AS VARCHAR)"
        parts.append(f"SELECT {i} AS var, {unit} AS unit {_source(d, item, domain)}")
    return (
        f"WITH stays AS ({stays_sql(d)}) SELECT var, unit, COUNT(*) FROM "
        f"({' UNION ALL '.join(parts)}) u GROUP BY var, unit"
    )


def _fact(d: Definition, source: str) -> str:
    """A static fact's SQL, cast to the type its column has in every database."""
    fact = d.layout.statics[source]
    sql = fact.sql.format(**{name: table(d, name) for name in fact.tables})
    if fact.kind == "real":
        return f"CAST({sql} AS DOUBLE PRECISION)"
    if fact.levels and isinstance(fact.levels[0], int):
        return f"CAST({sql} AS BIGINT)"
    return sql
