"""Where a clinical database keeps stays, events and baseline facts: OMOP CDM and MIMIC-IV.

A layout names, for each table a definition may read, the columns that play each part (the
stay's id, person and start; an event's item, times, value and unit), so that one query
builder (`query.py`) serves both. SQL here is the subset DuckDB and PostgreSQL share.

Column names follow OMOP CDM v5.4 (ohdsi.github.io/CommonDataModel) and MIMIC-IV v2/v3
(mimic.mit.edu: the `hosp` and `icu` modules, schemas `mimiciv_hosp` and `mimiciv_icu`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StayTable:
    """A table with one row per stay; SQL expressions over its alias `v`."""

    table: str
    id: str
    person: str
    admission: str
    start: str
    end: str
    concept: str | None  # the column a `stay.concepts` filter reads (None: no filter)


@dataclass(frozen=True)
class Domain:
    """A table of events; SQL expressions over its alias `e`. `key` joins it to a stay:
    "person" (any of the person's rows inside the stay), "stay" or "admission"."""

    table: str
    key: str
    key_column: str
    item: str
    start: str
    end: str | None  # None: instantaneous events
    value: str | None  # None: the event's presence (1)
    unit: str | None  # None: no unit recorded


@dataclass(frozen=True)
class StaticFact:
    """A baseline fact of the stay: a scalar SQL expression over the stays row `s` (columns
    stay_id, person_id, admission_id, start_ts, end_ts) and the table names in `{...}`."""

    sql: str
    kind: str
    levels: tuple[object, ...] | None = None
    tables: tuple[str, ...] = ()  # the tables `sql` reads (checked to exist first)
    outcome: bool = False  # known only after the stay (the schema marks it `outcome: true`)


@dataclass(frozen=True)
class Layout:
    stays: dict[str, StayTable]
    default_stay: str
    domains: dict[str, Domain]
    statics: dict[str, StaticFact]
    modules: dict[str, str]  # table -> the database schema it lives in (MIMIC-IV modules)
    stay_columns: dict[str, str]  # extra columns of the stays row a static fact reads

    def table(self, name: str, schema: str | None) -> str:
        """The qualified name of table `name` (a definition's `schema` prefixes OMOP tables)."""
        prefix = self.modules.get(name, schema)
        return f"{prefix}.{name}" if prefix else name


def _ts(datetime: str, date: str) -> str:
    return f"COALESCE(e.{datetime}, CAST(e.{date} AS TIMESTAMP))"


def _omop_domain(
    table: str, prefix: str, value: str | None, unit: str | None, end: bool = True
) -> Domain:
    start = f"{prefix}_start" if end else prefix
    return Domain(
        table=table,
        key="person",
        key_column="person_id",
        item=f"{table.split('_')[0]}_concept_id",
        start=_ts(f"{start}_datetime", f"{start}_date"),
        end=_ts(f"{prefix}_end_datetime", f"{prefix}_end_date") if end else None,
        value=value,
        unit=unit,
    )


OMOP = Layout(
    stays={
        "visit_occurrence": StayTable(
            "visit_occurrence",
            "v.visit_occurrence_id",
            "v.person_id",
            "v.visit_occurrence_id",
            "COALESCE(v.visit_start_datetime, CAST(v.visit_start_date AS TIMESTAMP))",
            "COALESCE(v.visit_end_datetime, CAST(v.visit_end_date AS TIMESTAMP))",
            "v.visit_concept_id",
        ),
        "visit_detail": StayTable(
            "visit_detail",
            "v.visit_detail_id",
            "v.person_id",
            "v.visit_occurrence_id",
            "COALESCE(v.visit_detail_start_datetime, CAST(v.visit_detail_start_date AS TIMESTAMP))",
            "COALESCE(v.visit_detail_end_datetime, CAST(v.visit_detail_end_date AS TIMESTAMP))",
            "v.visit_detail_concept_id",
        ),
    },
    default_stay="visit_occurrence",
    domains={
        "measurement": _omop_domain(
            "measurement", "measurement", "e.value_as_number", "e.unit_concept_id", end=False
        ),
        "observation": _omop_domain(
            "observation", "observation", "e.value_as_number", "e.unit_concept_id", end=False
        ),
        "drug_exposure": _omop_domain("drug_exposure", "drug_exposure", "e.quantity", None),
        "procedure_occurrence": Domain(
            "procedure_occurrence",
            "person",
            "person_id",
            "procedure_concept_id",
            _ts("procedure_datetime", "procedure_date"),
            _ts("procedure_end_datetime", "procedure_end_date"),
            None,
            None,
        ),
        "device_exposure": _omop_domain("device_exposure", "device_exposure", "e.quantity", None),
    },
    statics={
        "age_at_stay_start": StaticFact(
            "(SELECT FLOOR((EXTRACT(EPOCH FROM s.start_ts) - EXTRACT(EPOCH FROM COALESCE("
            "p.birth_datetime, MAKE_TIMESTAMP(CAST(p.year_of_birth AS INTEGER), "
            "CAST(COALESCE(p.month_of_birth, 7) AS INTEGER), "
            "CAST(COALESCE(p.day_of_birth, 1) AS INTEGER), 0, 0, 0.0)))) / 31557600.0) "
            "FROM {person} p WHERE p.person_id = s.person_id)",
            "real",
            tables=("person",),
        ),
        "gender": StaticFact(
            "(SELECT CASE p.gender_concept_id WHEN 8507 THEN 'Male' WHEN 8532 THEN 'Female' END "
            "FROM {person} p WHERE p.person_id = s.person_id)",
            "binary",
            ("Female", "Male"),
            tables=("person",),
        ),
        "death_during_stay": StaticFact(
            "CASE WHEN EXISTS (SELECT 1 FROM {death} d WHERE d.person_id = s.person_id AND "
            "CAST(d.death_date AS DATE) BETWEEN CAST(s.start_ts AS DATE) AND "
            "CAST(s.end_ts AS DATE)) THEN 1 ELSE 0 END",
            "binary",
            (0, 1),
            tables=("death",),
            outcome=True,
        ),
        "care_site": StaticFact(
            "(SELECT c.care_site_name FROM {care_site} c WHERE c.care_site_id = s.care_site_id)",
            "categorical",
            tables=("care_site",),
        ),
    },
    modules={},
    stay_columns={"care_site_id": "v.care_site_id"},
)

MIMIC_IV = Layout(
    stays={
        "icustays": StayTable(
            "icustays", "v.stay_id", "v.subject_id", "v.hadm_id", "v.intime", "v.outtime", None
        ),
    },
    default_stay="icustays",
    domains={
        "chartevents": Domain(
            "chartevents",
            "stay",
            "stay_id",
            "itemid",
            "e.charttime",
            None,
            "e.valuenum",
            "e.valueuom",
        ),
        "labevents": Domain(
            "labevents",
            "admission",
            "hadm_id",
            "itemid",
            "e.charttime",
            None,
            "e.valuenum",
            "e.valueuom",
        ),
        "outputevents": Domain(
            "outputevents",
            "stay",
            "stay_id",
            "itemid",
            "e.charttime",
            None,
            "e.value",
            "e.valueuom",
        ),
        "inputevents": Domain(
            "inputevents",
            "stay",
            "stay_id",
            "itemid",
            "e.starttime",
            "e.endtime",
            "e.amount",
            "e.amountuom",
        ),
        "procedureevents": Domain(
            "procedureevents",
            "stay",
            "stay_id",
            "itemid",
            "e.starttime",
            "e.endtime",
            None,
            None,
        ),
    },
    statics={
        "age_at_stay_start": StaticFact(
            "(SELECT p.anchor_age + EXTRACT(YEAR FROM s.start_ts) - p.anchor_year "
            "FROM {patients} p WHERE p.subject_id = s.person_id)",
            "real",
            tables=("patients",),
        ),
        "gender": StaticFact(
            "(SELECT CASE p.gender WHEN 'M' THEN 'Male' WHEN 'F' THEN 'Female' END "
            "FROM {patients} p WHERE p.subject_id = s.person_id)",
            "binary",
            ("Female", "Male"),
            tables=("patients",),
        ),
        "death_in_hospital": StaticFact(
            "(SELECT CAST(a.hospital_expire_flag AS INTEGER) FROM {admissions} a "
            "WHERE a.hadm_id = s.admission_id)",
            "binary",
            (0, 1),
            tables=("admissions",),
            outcome=True,
        ),
        "death_during_stay": StaticFact(
            "CASE WHEN EXISTS (SELECT 1 FROM {admissions} a WHERE a.hadm_id = s.admission_id "
            "AND a.deathtime >= s.start_ts AND a.deathtime <= s.end_ts) THEN 1 ELSE 0 END",
            "binary",
            (0, 1),
            tables=("admissions",),
            outcome=True,
        ),
        "care_unit": StaticFact("s.care_unit", "categorical"),
    },
    modules={
        "icustays": "mimiciv_icu",
        "chartevents": "mimiciv_icu",
        "outputevents": "mimiciv_icu",
        "inputevents": "mimiciv_icu",
        "procedureevents": "mimiciv_icu",
        "labevents": "mimiciv_hosp",
        "patients": "mimiciv_hosp",
        "admissions": "mimiciv_hosp",
    },
    stay_columns={"care_unit": "v.first_careunit"},
)

LAYOUTS = {"omop": OMOP, "mimic-iv": MIMIC_IV}
