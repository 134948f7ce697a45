"""HealthGymV1: the published Health Gym v1 WGAN-GP, faithful, with its presets.

model.py (the user-facing class), network.py (generator, critic and losses), bilstm.py (the
twice-differentiable biLSTM of the gradient penalty), config.py (settings and presets),
trainer.py (its part of the loop, distributed included).
"""

from .config import CURRICULA, PRESETS, V1Config
from .model import HealthGymV1

__all__ = ["CURRICULA", "PRESETS", "HealthGymV1", "V1Config"]
