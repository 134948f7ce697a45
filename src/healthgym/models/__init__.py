"""Generative models of longitudinal cohorts."""

from .healthgym_v1 import PRESETS, HealthGymV1

__all__ = ["PRESETS", "HealthGymV1"]
