"""healthgym: synthetic longitudinal patient cohorts (Health Gym v1 rebuilt, measured).

Every name below is imported on first use (PEP 562), so ``import healthgym`` and the
command's start-up load neither torch nor the evaluation stack until a verb needs them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import datasets
    from .data.cohort import Cohort
    from .data.inference import infer_schema
    from .data.schema import Schema, Variable
    from .evaluation import evaluate
    from .models import HealthGym, HealthGymGAN, HealthGymV1
    from .models.base import RunFolderModel
    from .models.encoding import EncodedCohort, Encoder

#: Public name -> the module that defines it.
_LAZY = {
    "Cohort": ".data.cohort",
    "EncodedCohort": ".models.encoding",
    "Encoder": ".models.encoding",
    "HealthGym": ".models",
    "HealthGymGAN": ".models",
    "HealthGymV1": ".models",
    "Schema": ".data.schema",
    "Variable": ".data.schema",
    "evaluate": ".evaluation",
    "infer_schema": ".data.inference",
}
#: Modules that 0.1.0 kept at the top level, by their attribute there (``hg.env.make``).
_MOVED = {
    "env": ".rl.env",
    "offline": ".rl.offline",
    "observations": ".rl.observations",
    "rewards": ".rl.rewards",
    "schema": ".data.schema",
    "cohort": ".data.cohort",
    "constraints": ".data.constraints",
    "encoding": ".models.encoding",
}

__all__ = [
    "Cohort",
    "EncodedCohort",
    "Encoder",
    "HealthGym",
    "HealthGymGAN",
    "HealthGymV1",
    "Schema",
    "Variable",
    "datasets",
    "evaluate",
    "infer_schema",
    "load",
]
__version__ = "0.2.0"


def load(run_dir: str | Path) -> RunFolderModel:
    """A trained model from its run folder, of the class its model.json names (no pickle;
    weights load with weights_only=True)."""
    from .models.registry import load_model

    return load_model(run_dir)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _MOVED:
        value = importlib.import_module(_MOVED[name], __name__)
    else:  # a submodule: hg.datasets, hg.evaluation, hg.env, ...
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
