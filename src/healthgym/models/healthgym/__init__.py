"""HealthGym, the default model: an autoregressive likelihood model of whole patients.

model.py (the user-facing class), network.py (the network and its likelihood and sampling),
tokenizer.py (cohort <-> tokens), config.py (settings), trainer.py (its part of the loop).
"""

from .config import HealthGymConfig
from .model import HealthGym

__all__ = ["HealthGym", "HealthGymConfig"]
