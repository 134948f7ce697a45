"""The model families by their one name (CLI ``--model``, model.json, checkpoints).

Adding a family: its folder under models/ and one line in `MODELS`; the CLI asks the classes
what they can do (`RunFolderModel`'s capabilities) and names none of them.
"""

from __future__ import annotations

from pathlib import Path

from ..training import run_folder
from .base import RunFolderModel, read_model_meta
from .gan import HealthGymGAN
from .healthgym import HealthGym
from .v1 import HealthGymV1

#: Model classes by family name; the first is the default.
MODELS: dict[str, type[RunFolderModel]] = {
    cls.name: cls for cls in (HealthGym, HealthGymGAN, HealthGymV1)
}


def default_family() -> type[RunFolderModel]:
    """The family trained when none is named: the first of `MODELS`."""
    return next(iter(MODELS.values()))


def family_named(name: object) -> type[RunFolderModel] | None:
    """The family called ``name`` in model.json, by this release's name or 0.1.0's."""
    return next((c for c in MODELS.values() if name in (c.name, c.legacy_name)), None)


def family_of(run_dir: str | Path) -> type[RunFolderModel]:
    """The family that wrote the run or model folder ``run_dir`` (its model.json says)."""
    path = Path(run_dir)
    name = read_model_meta(path).get("model")
    cls = family_named(name)
    if cls is None:
        where = path / run_folder.MODEL_FILE
        raise ValueError(f"{where}: unknown model {name!r}; known: {sorted(MODELS)}")
    return cls


def family_with_preset(name: str | None) -> type[RunFolderModel] | None:
    """The first family with a preset called ``name`` (a --preset, or a --dataset's name)."""
    return next((c for c in MODELS.values() if name is not None and name in c.presets), None)


def families_that(can: str) -> list[str]:
    """Names of the families with capability ``can`` ("private", "conditioning", "streaming",
    "distributable"), for messages."""

    def able(cls: type[RunFolderModel]) -> bool:
        value = getattr(cls, can)
        return bool(value() if callable(value) else value)

    return [name for name, cls in MODELS.items() if able(cls)]


def load_model(run_dir: str | Path) -> RunFolderModel:
    """The trained model in a run or model folder, of whichever family wrote it."""
    return family_of(run_dir).load(Path(run_dir))
