"""The file layouts of Health Gym's published synthetic datasets, and how healthgym models them.

One `Layout` per file: its columns in published order, the code -> level map of every coded
column, and the variables (kind, role, transform) as published. Loading and writing files
(`healthgym_published`) only read these tables.

Sources and assumptions, dataset by dataset:

- ART for HIV (Health Gym v2.0 synthetic ART for HIV, figshare, CC BY 4.0): columns, codes and
  labels as listed by the authors (Kuo et al.; docs/healthgym-v1.md section 7). Regimen labels
  follow that list ("FTC+TDF"; the authors' own tutorials write "FTC + TDF"). Gender and Ethnic
  are static. VL, CD4 and Rel CD4 use Box-Cox; the (M) flags are binary 0/1 variables.
- Acute hypotension (PhysioNet "Synthetic Acute Hypotension and Sepsis Datasets Based on
  MIMIC-III", C001_FakeHypotension.csv): variable names, kinds and order from the authors'
  `data_types.csv`; `PatientID` and `Timepoints` as used by code written for the file. Binned
  variables hold the lower edge of their bin, as the authors' back-transform writes them
  (fluid boluses 0/250/500/1000 mL; vasopressors 0/1e-06/8.4/20.28 mcg/kg/min; FiO2 0.0, 0.2,
  0.3, ..., 1.0 for [0, 0.2), [0.2, 0.3), ..., [1.0, 1.1)); GCS_total holds 3..15; the `_m`
  flags 0/1. Reals use Box-Cox (published: Box-Cox on x + 1, ours on x + 1e-3).
- Treatments (role "action", for offline RL and the simulator): the ART regimen components
  for HIV; fluid boluses and vasopressors for hypotension; the 4-hour fluid input and the
  maximum vasopressor dose for sepsis (Komorowski et al.'s AI Clinician actions).
- Sepsis (same PhysioNet project, C001_FakeSepsis.csv): column names as read by the authors'
  demo code (`PatientID`, `Timepoints`, `Age`, `HR`, ..., `INR`; 44 variables, SpO2 once, as a
  decile category). Gender 0 Male / 1 Female, ReAd and Mech 0 False / 1 True (Komorowski's
  coding); GCS 3..15; SpO2, PTT, PT and INR hold their decile code 0..9 as the published
  back-transform writes it (the decile edges were not published). Reals use min-max, or
  log(x + 1) then min-max for the long-tailed ones, as published. Every variable is dynamic:
  the file was generated step by step by v1, so even age and gender may vary within a patient.

Unverified (no public copy of the MIMIC files): the position of `PatientID`/`Timepoints` in
the MIMIC files (written after the variables, as in the ART file), their leading unnamed
row-index column (read and written, as pandas' `to_csv` default makes), whether codes are
written as integers or floats (read either way; written as integers where the codes are
integers), and whether the sepsis deciles are codes rather than raw values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..data.schema import Schema, Variable

ROW_INDEX = ""  # header of a leading unnamed row-index column (pandas reads it as "Unnamed: 0")


@dataclass(frozen=True)
class Layout:
    """One published file: columns in order, codes of the coded columns, modelled variables."""

    name: str
    title: str
    id: str
    time: str
    columns: tuple[str, ...]  # in published order, id and time included, row index excluded
    variables: tuple[Variable, ...]
    codes: dict[str, dict[Any, Any]]  # column -> {code in the file: level in the cohort}
    row_index: bool = False  # the file starts with an unnamed 0..n-1 row-index column

    def schema(self) -> Schema:
        """A fresh schema (id, time and variables) for cohorts loaded from this layout."""
        return Schema(self.id, self.time, [replace(v) for v in self.variables])


def _layout(
    name: str,
    title: str,
    id: str,
    time: str,
    columns: list[str],
    reals: dict[str, str],
    codes: dict[str, dict[Any, Any]],
    static: tuple[str, ...] = (),
    actions: tuple[str, ...] = (),
    row_index: bool = False,
) -> Layout:
    """A layout whose variables follow `columns`: reals with their transform, coded columns
    as binary (two codes) or categorical, levels in code order; `actions` are the treatments
    the published dataset was made for (role "action")."""
    variables = []
    for c in columns:
        if c in (id, time):
            continue
        role = "static" if c in static else "action" if c in actions else "dynamic"
        if c in reals:
            variables.append(Variable(c, "real", role, transform=reals[c]))
        else:
            kind = "binary" if len(codes[c]) == 2 else "categorical"
            variables.append(Variable(c, kind, role, levels=list(codes[c].values())))
    return Layout(name, title, id, time, tuple(columns), tuple(variables), codes, row_index)


FLAG = {0: 0, 1: 1}
FALSE_TRUE = {0: "False", 1: "True"}
GCS = {k: k for k in range(3, 16)}

# ---- ART for HIV ---------------------------------------------------------------------------
ART_CODES: dict[str, dict[Any, Any]] = {
    "Gender": {1: "Male", 2: "Female"},
    "Ethnic": {1: "Asian", 2: "African", 3: "Caucasian", 4: "Other"},
    "Base Drug Combo": {
        0: "FTC+TDF", 1: "3TC+ABC", 2: "FTC+TAF", 3: "DRV+FTC+TDF", 4: "FTC+RTVB+TDF", 5: "Other",
    },
    "Comp. INI": {0: "DTG", 1: "RAL", 2: "EVG", 3: "Not Applied"},
    "Comp. NNRTI": {0: "NVP", 1: "EFV", 2: "RPV", 3: "Not Applied"},
    "Extra PI": {0: "DRV", 1: "RTVB", 2: "LPV", 3: "RTV", 4: "ATV", 5: "Not Applied"},
    "Extra pk-En": FALSE_TRUE,
    "VL (M)": FLAG,
    "CD4 (M)": FLAG,
    "Drug (M)": FLAG,
}  # fmt: skip
ART_FOR_HIV = _layout(
    "art-for-hiv",
    "ART for HIV (Health Gym v2.0)",
    id="PatientID",
    time="Timestep",
    columns=["VL", "CD4", "Rel CD4", *ART_CODES, "PatientID", "Timestep"],
    reals=dict.fromkeys(["VL", "CD4", "Rel CD4"], "boxcox"),
    codes=ART_CODES,
    static=("Gender", "Ethnic"),
    # the regimen: its components are what an ART policy chooses
    actions=("Base Drug Combo", "Comp. INI", "Comp. NNRTI", "Extra PI", "Extra pk-En"),
)

# ---- Acute hypotension ---------------------------------------------------------------------
HYPOTENSION_REALS = [
    "MAP", "diastolic_bp", "systolic_bp", "urine", "ALT", "AST", "PO2", "lactic_acid",
    "serum_creatinine",
]  # fmt: skip
HYPOTENSION_FLAGS = [
    "urine_m", "ALT_AST_m", "FiO2_m", "GCS_total_m", "PO2_m", "lactic_acid_m",
    "serum_creatinine_m",
]  # fmt: skip
HYPOTENSION_CODES: dict[str, dict[Any, Any]] = {
    "fluid_boluses": {0: "[0, 250)", 250: "[250, 500)", 500: "[500, 1000)", 1000: ">= 1000"},
    "vasopressors": {0.0: "0", 1e-06: "(0, 8.4)", 8.4: "[8.4, 20.28)", 20.28: ">= 20.28"},
    "FiO2": {
        0.0: "< 0.2", 0.2: "[0.2, 0.3)", 0.3: "[0.3, 0.4)", 0.4: "[0.4, 0.5)", 0.5: "[0.5, 0.6)",
        0.6: "[0.6, 0.7)", 0.7: "[0.7, 0.8)", 0.8: "[0.8, 0.9)", 0.9: "[0.9, 1.0)", 1.0: ">= 1.0",
    },
    "GCS_total": GCS,
    **dict.fromkeys(HYPOTENSION_FLAGS, FLAG),
}  # fmt: skip
HYPOTENSION = _layout(
    "hypotension",
    "acute hypotension (Health Gym, MIMIC-III)",
    id="PatientID",
    time="Timepoints",
    columns=[*HYPOTENSION_REALS, *HYPOTENSION_CODES, "PatientID", "Timepoints"],
    reals=dict.fromkeys(HYPOTENSION_REALS, "boxcox"),
    codes=HYPOTENSION_CODES,
    actions=("fluid_boluses", "vasopressors"),  # the two treatments of hypotension
    row_index=True,
)

# ---- Sepsis --------------------------------------------------------------------------------
SEPSIS_MINMAX = [
    "Age", "HR", "SysBP", "MeanBP", "DiaBP", "RR", "Temp", "K", "Na", "Cl", "Ca", "IonisedCa",
    "CO2", "Albumin", "Hb", "pH", "BE", "HCO3", "FiO2",
]  # fmt: skip
SEPSIS_LOG1P = [
    "Glucose", "BUN", "Creatinine", "Mg", "SGOT", "SGPT", "TotalBili", "WbcCount",
    "PlateletsCount", "PaO2", "PaCO2", "Lactate", "InputTotal", "Input4H", "MaxVaso",
    "OutputTotal", "Output4H",
]  # fmt: skip
DECILES = {i: f"decile {i + 1}" for i in range(10)}
SEPSIS_CODES: dict[str, dict[Any, Any]] = {
    "Gender": {0: "Male", 1: "Female"},
    "ReAd": FALSE_TRUE,
    "Mech": FALSE_TRUE,
    "GCS": GCS,
    **dict.fromkeys(["SpO2", "PTT", "PT", "INR"], DECILES),
}
SEPSIS = _layout(
    "sepsis",
    "sepsis (Health Gym, MIMIC-III)",
    id="PatientID",
    time="Timepoints",
    columns=[*SEPSIS_MINMAX, *SEPSIS_LOG1P, *SEPSIS_CODES, "PatientID", "Timepoints"],
    reals={**dict.fromkeys(SEPSIS_MINMAX, "minmax"), **dict.fromkeys(SEPSIS_LOG1P, "log1p")},
    codes=SEPSIS_CODES,
    actions=("Input4H", "MaxVaso"),  # fluids and vasopressors, as in the AI Clinician
    row_index=True,
)

LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (ART_FOR_HIV, HYPOTENSION, SEPSIS)}
DATASETS = tuple(LAYOUTS)


def get_layout(dataset: str) -> Layout:
    """The layout of a published dataset by name (`DATASETS`)."""
    if dataset not in LAYOUTS:
        raise ValueError(f"unknown Health Gym dataset {dataset!r}; known: {list(DATASETS)}")
    return LAYOUTS[dataset]


def schema_differences(schema: Schema, layout: Layout) -> list[str]:
    """Variables whose name, kind or levels differ between `schema` and `layout` (empty: same)."""
    ours = {v.name: (v.kind, v.levels) for v in schema.variables}
    theirs = {v.name: (v.kind, v.levels) for v in layout.variables}
    return sorted(n for n in ours.keys() | theirs.keys() if ours.get(n) != theirs.get(n))


def published_dataset(schema: Schema) -> str:
    """The published dataset whose variables (names, kinds, levels) `schema` has.

    A run is identified by its own schema rather than by a separate record, so a model trained
    through the Python API or the CLI, on a file or a loaded cohort, is recognised alike.
    """
    diffs = {name: schema_differences(schema, lay) for name, lay in LAYOUTS.items()}
    for name, diff in diffs.items():
        if not diff:
            return name
    closest = min(diffs, key=lambda n: len(diffs[n]))
    raise ValueError(
        f"the variables match no published Health Gym layout {list(DATASETS)}; closest is "
        f"{closest!r}, which differs in {diffs[closest][:8]}"
    )
