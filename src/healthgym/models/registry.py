"""The model families by their one name (CLI ``--model``, model.json, checkpoints)."""

from __future__ import annotations

from pathlib import Path

from .base import MODEL_FILE, RunFolderModel, read_model_meta
from .gan import HealthGymGAN
from .healthgym import HealthGym
from .v1 import HealthGymV1

#: Model classes by family name; the first is the default.
MODELS: dict[str, type[RunFolderModel]] = {
    cls.name: cls for cls in (HealthGym, HealthGymGAN, HealthGymV1)
}
#: model.json names written by healthgym 0.1.0 (class names).
_LEGACY = {cls.legacy_name: cls for cls in MODELS.values()}


def load_model(run_dir: str | Path) -> HealthGym | HealthGymGAN | HealthGymV1:
    """The trained model in a run or model folder, of whichever family wrote it."""
    path = Path(run_dir)
    name = read_model_meta(path).get("model")
    cls = MODELS.get(name) or _LEGACY.get(name)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"{path / MODEL_FILE}: unknown model {name!r}; known: {sorted(MODELS)}")
    return cls.load(path)
