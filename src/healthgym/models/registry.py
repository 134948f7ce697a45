"""Which model class a run folder holds: `model.json`'s "model" field names it."""

from __future__ import annotations

import json
from pathlib import Path

from .healthgym import HealthGym
from .healthgym_v1 import MODEL_FILE, HealthGymV1

#: Model classes by the name their run folders record.
MODELS: dict[str, type[HealthGym] | type[HealthGymV1]] = {
    "HealthGym": HealthGym,
    "HealthGymV1": HealthGymV1,
}


def load_model(run_dir: str | Path) -> HealthGym | HealthGymV1:
    """The trained model in a run or model folder, of whichever class wrote it."""
    path = Path(run_dir)
    meta_path = path / MODEL_FILE
    if not meta_path.exists():
        raise ValueError(f"{path}: not a healthgym run folder (no {MODEL_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    name = meta.get("model") if isinstance(meta, dict) else None
    if name not in MODELS:
        raise ValueError(f"{meta_path}: unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name].load(path)
