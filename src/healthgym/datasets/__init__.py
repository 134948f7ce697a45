"""Real cohorts: the PhysioNet 2012 loader and the bundled demo cohort built from it."""

from .demo_data import demo
from .physionet2012 import physionet2012, read_physionet2012_long

__all__ = ["demo", "physionet2012", "read_physionet2012_long"]
