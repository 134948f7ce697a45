"""Real cohorts: the PhysioNet 2012 loader, the bundled demo and visit cohorts built from it
(with the demo's variable-length variant: the development cohorts), and the loaders and
writers of Health Gym's published synthetic datasets."""

from .demo_data import demo
from .healthgym_layouts import DATASETS, published_dataset
from .healthgym_published import (
    art_for_hiv,
    hypotension,
    load_published,
    sepsis,
    to_published,
    write_published,
)
from .physionet2012 import physionet2012, read_physionet2012_long
from .visit_cohort import build_visits, development, variable_length, visits

__all__ = [
    "DATASETS",
    "art_for_hiv",
    "build_visits",
    "demo",
    "development",
    "hypotension",
    "load_published",
    "physionet2012",
    "published_dataset",
    "read_physionet2012_long",
    "sepsis",
    "to_published",
    "variable_length",
    "visits",
    "write_published",
]
