"""Which model class a run folder holds: `model.json`'s "model" field names it."""

from __future__ import annotations

from pathlib import Path

from .healthgym import HealthGym
from .healthgym_gan import HealthGymGAN
from .healthgym_v1 import MODEL_FILE, HealthGymV1, read_model_meta

#: Model classes by the name their run folders record.
MODELS: dict[str, type[HealthGym] | type[HealthGymGAN] | type[HealthGymV1]] = {
    "HealthGym": HealthGym,
    "HealthGymGAN": HealthGymGAN,
    "HealthGymV1": HealthGymV1,
}


def load_model(run_dir: str | Path) -> HealthGym | HealthGymGAN | HealthGymV1:
    """The trained model in a run or model folder, of whichever class wrote it."""
    path = Path(run_dir)
    meta = read_model_meta(path)
    name = meta.get("model")
    if name not in MODELS:
        raise ValueError(f"{path / MODEL_FILE}: unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name].load(path)
