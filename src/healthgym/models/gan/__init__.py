"""HealthGymGAN: Health Gym v1's WGAN-GP rebuilt around the patient.

model.py (the user-facing class), network.py (generator and critic), losses.py and
calibration.py (what training adds to the WGAN-GP), config.py (settings), trainer.py (its
part of the loop).
"""

from .config import GANConfig
from .model import HealthGymGAN

__all__ = ["GANConfig", "HealthGymGAN"]
