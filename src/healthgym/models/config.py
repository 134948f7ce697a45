"""What every family's settings dataclass shares: a device to resolve and a JSON round trip."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch

C = TypeVar("C", bound="ConfigBase")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base of `HealthGymConfig`, `GANConfig` and `V1Config` (frozen dataclasses).

    Subclasses declare their fields, ``device`` among them, and validate in __post_init__.
    """

    def resolve_device(self) -> torch.device:
        """The torch device named by ``device`` ("auto" prefers CUDA)."""
        device = self.device  # type: ignore[attr-defined]
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(device)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: tuples become lists."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        """Inverse of `to_dict`; unknown keys are an error, missing keys take defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__} settings must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**d)

    def check_positive(self, *names: str) -> None:
        """ValueError naming the first of ``names`` that is not > 0."""
        for name in names:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
