"""The bundled demo cohort written as a small OMOP CDM (DuckDB), to try `healthgym cohort`
without a hospital database, and to test it: the shipped definition `omop-icu-demo` reads
the demo cohort back from it.

Each stay is an ICU visit (concept 32037) with its care site (the ICU type), each present
value a measurement at its step's start + 1 h (Urine one per step, summed back), ventilation
a procedure, the outcome a death row dated the visit's last day. Concept ids are those of the
shipped definition (`CONCEPTS`); the dates are synthetic (from 2100-01-01).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.atomic import write_atomic
from ..data.cohort import Cohort
from ..extras import require

#: Demo variable -> (OMOP domain, concept id, unit concept id). LOINC-coded measurements as
#: in the shipped definition (definitions/omop-icu-demo.yaml names each code).
CONCEPTS = {
    "HR": ("measurement", 3027018, 8541),
    "SysABP": ("measurement", 3004249, 8876),
    "MAP": ("measurement", 3027598, 8876),
    "RespRate": ("measurement", 3024171, 8541),
    "Temp": ("measurement", 3020891, 586323),
    "GCS": ("measurement", 3032652, None),
    "FiO2": ("measurement", 3024882, 8554),
    "Glucose": ("measurement", 3004501, 8840),
    "Creatinine": ("measurement", 3016723, 8840),
    "Urine": ("measurement", 3014315, 8587),
    "Weight": ("measurement", 3025315, 9529),
    "MechVent": ("procedure_occurrence", 4230167, None),
}
ICU_VISIT = 32037
GENDERS = {"Male": 8507, "Female": 8532}
STEP = pd.Timedelta(hours=4)
YEAR_S = 31_557_600  # 365.25 days


def write_demo_cdm(path: str | Path, cohort: Cohort | None = None, copies: int = 1) -> Path:
    """Write `cohort` (the demo by default) as an OMOP CDM DuckDB file at `path` (replaced
    whole, atomically, if it exists).

    `copies` > 1 repeats the stays under new ids (a large CDM for the builder's benchmark).
    """
    require("db", "writing an OMOP CDM")
    import duckdb

    from ..datasets import demo

    cohort = cohort if cohort is not None else demo()
    step = 10 ** len(str(int(cohort.table[cohort.schema.id].max())))

    def write(tmp: Path) -> None:
        con = duckdb.connect(str(tmp))
        try:
            for copy in range(copies):
                for name, frame in cdm_tables(cohort, offset=copy * step).items():
                    con.register("frame", frame)
                    if copy == 0:
                        con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
                    elif name != "care_site":
                        con.execute(f"INSERT INTO {name} SELECT * FROM frame")
                    con.unregister("frame")
        finally:
            con.close()

    return write_atomic(path, write)


def cdm_tables(cohort: Cohort, offset: int = 0) -> dict[str, pd.DataFrame]:
    """The CDM tables (person, visit_occurrence, measurement, procedure_occurrence, death,
    care_site) of a cohort shaped like the demo; stay and person ids are `RecordID + offset`."""
    t, schema = cohort.table, cohort.schema
    first = t.groupby(schema.id, sort=True).first().reset_index()
    ids = first[schema.id].to_numpy(np.int64) + offset
    start = pd.Timestamp("2100-01-01") + pd.to_timedelta(np.arange(len(ids)) % 3650, unit="D")
    end = start + pd.Timedelta(hours=72)
    sites = list(schema["ICUType"].levels)
    birth = start - pd.to_timedelta(first["Age"].to_numpy(float) * YEAR_S + 3600, unit="s")
    person = pd.DataFrame(
        {
            "person_id": ids,
            "gender_concept_id": first["Gender"].map(GENDERS).fillna(0).astype(np.int64),
            "year_of_birth": birth.year,
            "month_of_birth": birth.month,
            "day_of_birth": birth.day,
            "birth_datetime": birth,
        }
    )
    visit = pd.DataFrame(
        {
            "visit_occurrence_id": ids,
            "person_id": ids,
            "visit_concept_id": ICU_VISIT,
            "visit_start_date": start.date,
            "visit_start_datetime": start,
            "visit_end_date": end.date,
            "visit_end_datetime": end,
            "care_site_id": first["ICUType"].map({s: i + 1 for i, s in enumerate(sites)}),
        }
    )
    died = first["in_hospital_death"].astype(int).to_numpy() == 1
    death = pd.DataFrame({"person_id": ids[died], "death_date": end[died].date})
    care_site = pd.DataFrame({"care_site_id": range(1, len(sites) + 1), "care_site_name": sites})
    row_start = start[np.searchsorted(first[schema.id].to_numpy(), t[schema.id].to_numpy())]
    when = row_start + t[schema.time].to_numpy() * STEP + pd.Timedelta(hours=1)
    row_ids = t[schema.id].to_numpy(np.int64) + offset
    measurements, procedures = [], []
    for name, (domain, concept, unit) in CONCEPTS.items():
        values = pd.to_numeric(t[name], errors="coerce").to_numpy(float)
        keep = ~np.isnan(values) & (values != 0 if domain == "procedure_occurrence" else True)
        frame = {"person_id": row_ids[keep], "concept": concept, "datetime": when[keep]}
        if domain == "measurement":
            frame |= {"value_as_number": values[keep], "unit_concept_id": unit}
            measurements.append(pd.DataFrame(frame))
        else:
            procedures.append(pd.DataFrame(frame))
    measurement = pd.concat(measurements, ignore_index=True)
    measurement = measurement.rename(
        columns={"concept": "measurement_concept_id", "datetime": "measurement_datetime"}
    )
    measurement.insert(0, "measurement_id", np.arange(len(measurement), dtype=np.int64) + offset)
    measurement["measurement_date"] = measurement["measurement_datetime"].dt.date
    measurement["unit_concept_id"] = measurement["unit_concept_id"].astype("Int64")
    procedure = pd.concat(procedures, ignore_index=True).rename(
        columns={"concept": "procedure_concept_id", "datetime": "procedure_datetime"}
    )
    procedure["procedure_date"] = procedure["procedure_datetime"].dt.date
    procedure["procedure_end_datetime"] = pd.NaT
    procedure["procedure_end_date"] = pd.NaT
    return {
        "person": person,
        "visit_occurrence": visit,
        "measurement": measurement,
        "procedure_occurrence": procedure,
        "death": death,
        "care_site": care_site,
    }
