"""Hyperparameters of Health Gym v1 training, defaults as published (ART for HIV)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...training.seeding import check_seed
from ..config import ConfigBase

#: Published curricula over sequence length, per dataset.
CURRICULA: dict[str, tuple[int, ...]] = {
    "art-for-hiv": (10, 20, 30, 40, 50, 60),
    "hypotension": (1, 2, 3, 5, 10, 20, 30, 40, 48),
    "sepsis": tuple(range(1, 21)),
}

#: Stages in a derived curriculum (``curriculum=None``).
DERIVED_STAGES = 6


@dataclass(frozen=True)
class V1Config(ConfigBase):
    """Everything that shapes a v1 run; JSON round-trips through ``to_dict``/``from_dict``."""

    noise_dim: int = 128  #: size of the U(0, 1) noise vector per time step
    hidden: int = 128  #: LSTM hidden size per direction and MLP width, both networks
    batch_size: int = 256  #: real sequences per batch (published: 256 ART, 32 sepsis, 128 hypo.)
    epochs: int = 100  #: full passes over the curriculum
    critic_iters: int = 5  #: critic updates per generator update (published "G_iter")
    lambda_gp: float = 10.0  #: weight of the gradient penalty in the critic loss
    lambda_corr: float = 10.0  #: weight of the correlation loss in the generator loss (hypo.: 1)
    corr_threshold: bool = True  #: 2025 variant: soft-threshold both matrices by t ~ U(0, 1)
    lr: float = 1e-3  #: Adam learning rate, both networks
    betas: tuple[float, float] = (0.9, 0.99)  #: Adam betas, both networks
    #: ascending sequence lengths visited every epoch; None derives 6 evenly spaced lengths
    #: ending at the longest patient (48 -> 8, 16, ..., 48); see CURRICULA for published ones
    curriculum: tuple[int, ...] | None = None
    seed: int = 0  #: seeds initial weights, noise, penalties, thresholds and shuffles
    device: str = "auto"  #: "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    max_loss: float = 1e6  #: a loss that is NaN, inf or larger in magnitude stops the run
    #: mixed precision: generator and critic forward passes under bf16 autocast; the gradient
    #: penalty (interpolation, critic pass, double backward), the losses and the weights stay
    #: fp32. Off by default (the published settings are fp32); meant for CUDA
    amp: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.curriculum is not None:
            object.__setattr__(self, "curriculum", tuple(int(n) for n in self.curriculum))
        self.check_positive(
            "noise_dim", "hidden", "batch_size", "epochs", "critic_iters", "lr", "max_loss"
        )
        if self.lambda_gp < 0 or self.lambda_corr < 0:
            raise ValueError("lambda_gp and lambda_corr must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        c = self.curriculum
        if c is not None and (not c or c[0] < 1 or list(c) != sorted(set(c))):
            raise ValueError(f"curriculum must be strictly ascending positive lengths, got {c}")
        check_seed(self.seed)

    def resolve_curriculum(self, max_length: int) -> tuple[int, ...]:
        """Stage lengths for data whose longest patient has ``max_length`` steps."""
        if self.curriculum is None:
            stages = {max_length * i // DERIVED_STAGES for i in range(1, DERIVED_STAGES + 1)}
            return tuple(sorted(stages - {0}))
        if self.curriculum[-1] > max_length:
            longest = self.curriculum[-1]
            raise ValueError(f"curriculum reaches {longest} > longest patient ({max_length})")
        return self.curriculum


#: Named settings. "faithful" is the published set-up (ART for HIV hyperparameters, curriculum
#: derived from the cohort's longest stay); "demo" is a short run for the bundled demo cohort.
PRESETS: dict[str, dict[str, Any]] = {
    "faithful": {},
    "demo": {"epochs": 3, "hidden": 64, "noise_dim": 64, "batch_size": 128},
    # The published set-up of each Health Gym dataset (`healthgym train --dataset NAME` uses the
    # one of the same name). Our epoch visits every curriculum length in turn; the published
    # code differs per dataset: ART walked the lengths every epoch (100 epochs, resumed to 200);
    # hypotension ran 5000 epochs per length, one length after the other, on random windows
    # (ours: the first L steps, so each length still gets 5000 passes); sepsis kept one loader
    # per true patient length 1..20, while our stage L trains on the patients with length >= L
    # truncated to L.
    "art-for-hiv": {
        "batch_size": 256,
        "curriculum": CURRICULA["art-for-hiv"],
        "lambda_corr": 10.0,
        "epochs": 200,
    },
    "hypotension": {
        "batch_size": 128,
        "curriculum": CURRICULA["hypotension"],
        "lambda_corr": 1.0,
        "epochs": 5000,
    },
    "sepsis": {
        "batch_size": 32,
        "curriculum": CURRICULA["sepsis"],
        "lambda_corr": 10.0,
        "epochs": 400,
    },
}
