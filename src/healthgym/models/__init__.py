"""Generative models of longitudinal cohorts: one folder per family (healthgym, gan, v1),
with what they share beside them (base class, registry, conditioning, layout, config).

The names below are imported on first use (PEP 562): a family's modules, and torch, load only
when something asks for them."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .gan import HealthGymGAN
    from .healthgym import HealthGym
    from .registry import MODELS, load_model
    from .v1 import PRESETS, HealthGymV1

_LAZY = {
    "HealthGymGAN": ".gan",
    "HealthGym": ".healthgym",
    "MODELS": ".registry",
    "load_model": ".registry",
    "PRESETS": ".v1",
    "HealthGymV1": ".v1",
}

__all__ = ["MODELS", "PRESETS", "HealthGym", "HealthGymGAN", "HealthGymV1", "load_model"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
