"""The cohorts the benchmarks run on: an ART-for-HIV-shaped random cohort and the demo cohort.

ART shape (issue 5): 300 patients x 60 monthly steps, 22 design columns = 3 reals (VL, CD4,
Rel CD4) + one-hot spans of 2, 4, 6, 4 and 3 levels, curriculum 10, 20, ..., 60, batch 256.
Random values are enough for timing: the maths per step does not depend on them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

import healthgym as hg
from healthgym.models.layout import DesignLayout
from healthgym.models.v1.config import CURRICULA
from healthgym.models.v1.model import design_layout, design_matrix

ART_LEVELS = {
    "Gender": ["Male", "Female"],
    "Ethnic": ["Asian", "African", "Caucasian", "Other"],
    "Base Drug Combo": ["FTC+TDF", "3TC+ABC", "FTC+TAF", "DRV+FTC+TDF", "FTC+RTVB+TDF", "Other"],
    "Comp. INI": ["DTG", "RAL", "EVG", "Not Applied"],
    "Comp. NNRTI": ["NVP", "EFV", "Not Applied"],
}
ART_REALS = ("VL", "CD4", "Rel CD4")
ART_CURRICULUM = CURRICULA["art-for-hiv"]


def art_design(
    n: int = 300, length: int = 60, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, DesignLayout]:
    """Design tensor (n, length, 22), lengths (all full) and layout of the ART shape."""
    g = torch.Generator().manual_seed(seed)
    spans, start = [], len(ART_REALS)
    for levels in ART_LEVELS.values():
        spans.append((start, start + len(levels)))
        start += len(levels)
    layout = DesignLayout(start, tuple(range(len(ART_REALS))), tuple(spans))
    x = torch.zeros(n, length, start)
    x[..., : len(ART_REALS)] = torch.rand(n, length, len(ART_REALS), generator=g)
    for s, e in spans:
        x[..., s:e] = torch.eye(e - s)[torch.randint(0, e - s, (n, length), generator=g)]
    return x, torch.full((n,), length), layout


def art_cohort(n: int = 300, length: int = 60, seed: int = 0) -> hg.Cohort:
    """A random long table of the ART shape (same 22 design columns), as a Cohort."""
    rng = np.random.default_rng(seed)
    rows = n * length
    table = {
        "PatientID": np.repeat(np.arange(1, n + 1), length),
        "Timestep": np.tile(np.arange(length), n),
        "VL": rng.lognormal(3.7, 2.0, rows),
        "CD4": rng.lognormal(6.1, 0.6, rows),
        "Rel CD4": rng.uniform(1, 60, rows),
    }
    for name, levels in ART_LEVELS.items():
        per = length if name in ("Gender", "Ethnic") else 1  # statics constant per patient
        codes = rng.integers(0, len(levels), rows // per)
        table[name] = np.repeat(np.asarray(levels, dtype=object)[codes], per)
    return hg.Cohort(pd.DataFrame(table), id="PatientID", time="Timestep")


def demo_design() -> tuple[torch.Tensor, torch.Tensor, DesignLayout]:
    """The bundled demo cohort (4,000 stays x 12 steps) as HealthGymV1 trains on it."""
    cohort = hg.datasets.demo()
    encoder = hg.Encoder(cohort.schema).fit(cohort)
    encoded = encoder.transform(cohort)
    x = torch.from_numpy(design_matrix(encoded)).float()
    return x, torch.from_numpy(encoded.lengths).long(), design_layout(encoder)


#: Dynamic variables of the demo cohort copied (with noise) into the ICU shape's extra eight.
ICU_EXTRA = ("HR", "SysABP", "MAP", "RespRate", "Temp", "FiO2", "Glucose", "Creatinine")


def icu_cohort(n: int | None = None, seed: int = 0) -> hg.Cohort:
    """The ICU shape of issue 18: the demo cohort (4,000 stays x 12 steps, 4 statics, 12
    dynamic variables) plus 8 dynamic reals derived from its own (each a demo variable times
    log-normal noise, with the same missingness plus 10% more): 24 variables, 38 dynamic
    tokens. ``n``: the first n patients only."""
    cohort = hg.datasets.demo()
    if n is not None:
        cohort = cohort.subset(cohort.ids[:n])
    rng = np.random.default_rng(seed)
    table = cohort.table.copy()
    for name in ICU_EXTRA:
        x = table[name].to_numpy(dtype=float) * rng.lognormal(0.0, 0.1, len(table))
        x[rng.random(len(table)) < 0.1] = np.nan
        table[f"{name}2"] = np.round(x, 2)
    return hg.Cohort(table, id=cohort.schema.id, time=cohort.schema.time)
