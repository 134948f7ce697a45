"""healthgym: synthetic longitudinal patient cohorts (Health Gym v1 rebuilt, measured)."""

from .cohort import Cohort
from .encoding import EncodedCohort, Encoder
from .schema import Schema, Variable, infer_schema

__all__ = ["Cohort", "EncodedCohort", "Encoder", "Schema", "Variable", "infer_schema"]
__version__ = "0.1.0"
