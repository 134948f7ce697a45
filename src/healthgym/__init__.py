"""healthgym: synthetic longitudinal patient cohorts (Health Gym v1 rebuilt, measured)."""

from pathlib import Path

from . import datasets
from .cohort import Cohort
from .encoding import EncodedCohort, Encoder
from .evaluation import evaluate
from .models import HealthGym, HealthGymGAN, HealthGymV1, load_model
from .schema import Schema, Variable, infer_schema

__all__ = [
    "Cohort",
    "EncodedCohort",
    "Encoder",
    "HealthGym",
    "HealthGymGAN",
    "HealthGymV1",
    "Schema",
    "Variable",
    "datasets",
    "evaluate",
    "infer_schema",
    "load",
]
__version__ = "0.1.0"


def load(run_dir: str | Path) -> HealthGym | HealthGymGAN | HealthGymV1:
    """A trained model from its run folder, of the class its model.json names (no pickle;
    weights load with weights_only=True)."""
    return load_model(run_dir)
