"""Settings of HealthGymGAN (beyond v1); defaults measured on the demo cohort, 2 CPU cores.

How the defaults were chosen is in docs/models/gan.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...training.seeding import check_seed
from ..config import ConfigBase


@dataclass(frozen=True)
class GANConfig(ConfigBase):
    """Everything that shapes a HealthGymGAN run; JSON round-trips through to_dict/from_dict."""

    noise_dim: int = 32  #: N(0, 1) noise per patient (static head) and per step (sequence)
    hidden: int = 64  #: LSTM hidden size per direction and MLP width, every network
    batch_size: int = 128  #: real patients per generator step
    epochs: int = 300  #: passes over the training patients (max_minutes usually stops first)
    critic_iters: int = 2  #: critic updates per generator update, each with fresh fakes
    lambda_gp: float = 10.0  #: weight of the gradient penalty in the critic loss
    lambda_corr: float = 10.0  #: weight of v1's correlation loss (over real steps only)
    corr_threshold: bool = True  #: v1's 2025 soft threshold of both correlation matrices
    lambda_rates: float = 10.0  #: weight of the per-step level and missing-rate loss
    tau: float = 0.2  #: Gumbel-softmax temperature of generated one-hot spans
    #: straight-through: exact one-hot spans forward (as real rows), soft gradients backward
    hard_spans: bool = True
    lr_generator: float = 1e-3  #: Adam learning rate of the generator (heads included)
    lr_critic: float = 1e-3  #: Adam learning rate of the critic
    betas: tuple[float, float] = (0.5, 0.9)  #: Adam betas, both networks (WGAN-GP paper)
    seed: int = 0  #: seeds initial weights, noise, penalties, thresholds and shuffles
    device: str = "auto"  #: "auto" (cuda if available, else cpu), "cpu", "cuda", ...
    max_loss: float = 1e6  #: a loss that is NaN, inf or larger in magnitude stops the run
    #: generated patients used to calibrate level and missing rates after training (0: off)
    calibration_patients: int = 4096
    calibration_rounds: int = 10  #: proportional-fitting rounds of that calibration
    #: partial conditions are met by rejection: at most this many static draws per patient
    condition_max_draws: int = 200
    #: a conditioned real static is accepted within this distance on the encoded [0, 1] scale
    condition_tolerance: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        positive = (
            "noise_dim", "hidden", "batch_size", "epochs", "critic_iters", "tau",
            "lr_generator", "lr_critic", "max_loss", "calibration_rounds", "condition_max_draws",
            "condition_tolerance",
        )  # fmt: skip
        self.check_positive(*positive)
        for name in ("lambda_gp", "lambda_corr", "lambda_rates", "calibration_patients"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        check_seed(self.seed)
