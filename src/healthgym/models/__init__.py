"""Generative models of longitudinal cohorts: one folder per family (healthgym, gan, v1),
with what they share beside them (base class, registry, conditioning, layout, config)."""

from .gan import HealthGymGAN
from .healthgym import HealthGym
from .registry import MODELS, load_model
from .v1 import PRESETS, HealthGymV1

__all__ = ["MODELS", "PRESETS", "HealthGym", "HealthGymGAN", "HealthGymV1", "load_model"]
