"""Generative models of longitudinal cohorts."""

from .healthgym import HealthGym
from .healthgym_gan import HealthGymGAN
from .healthgym_v1 import PRESETS, HealthGymV1
from .registry import MODELS, load_model

__all__ = ["MODELS", "PRESETS", "HealthGym", "HealthGymGAN", "HealthGymV1", "load_model"]
