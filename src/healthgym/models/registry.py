"""The model families by their one name (CLI ``--model``, model.json, checkpoints).

Adding a family: its folder under models/ and one line in `MODELS`; the CLI asks the classes
what they can do (`RunFolderModel`'s capabilities) and names none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..training import run_folder
from .base import RunFolderModel, read_model_meta
from .gan import HealthGymGAN
from .healthgym import HealthGym
from .v1 import HealthGymV1

#: Model classes by family name; the first is the default.
MODELS: dict[str, type[RunFolderModel]] = {
    cls.name: cls for cls in (HealthGym, HealthGymGAN, HealthGymV1)
}


def preset_names() -> list[str]:
    """Every family's preset names (the CLI's --preset choices)."""
    return sorted({name for cls in MODELS.values() for name in cls.presets})


def default_family() -> type[RunFolderModel]:
    """The family trained when none is named: the first of `MODELS`."""
    return next(iter(MODELS.values()))


def family_of(run_dir: str | Path, meta: dict[str, Any] | None = None) -> type[RunFolderModel]:
    """The family that wrote the run or model folder ``run_dir``, as its model.json (``meta``,
    read here when not given) says."""
    path = Path(run_dir)
    meta = read_model_meta(path) if meta is None else meta
    cls = next((c for c in MODELS.values() if c.wrote(meta)), None)
    if cls is None:
        where = path / run_folder.MODEL_FILE
        raise ValueError(f"{where}: unknown model {meta.get('model')!r}; known: {sorted(MODELS)}")
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


# ---- what `healthgym train` asks of the families ------------------------------------------
def family_for(
    model_name: str | None,
    preset: str | None,
    dataset: str | None,
    saved: tuple[type[RunFolderModel], dict[str, Any]] | None,
) -> type[RunFolderModel]:
    """The family to train: --model, else a resumed run's, else the one whose preset is
    --preset or --dataset, else the default."""
    if model_name is not None:
        return MODELS[model_name]
    if saved is not None:
        return saved[0]
    return family_with_preset(preset) or family_with_preset(dataset) or default_family()


def check_capabilities(
    family: type[RunFolderModel],
    private: bool,
    nproc: int | None,
    schema_file: str | None,
    stream: bool,
) -> None:
    """The options of `train` that need a capability of the family, and what privacy asks
    of them (one process, a schema given as a file, the data in memory)."""
    from ..training import distributed

    several = (nproc or 1) > 1 or distributed.env_world_size() > 1
    if several and not family.distributable():
        raise ValueError(
            f"--model {family.name} trains in one process: distributed training (--nproc, "
            f"torchrun) is for {' and '.join(families_that('distributable'))}"
        )
    if stream and not family.streaming():
        raise ValueError(
            f"--stream trains {' or '.join(families_that('streaming'))}, not --model {family.name}"
        )
    if not private:
        return
    if not family.private:
        raise ValueError(
            f"--dp-epsilon and --dp-delta train privately; --model {family.name} has no private "
            f"training: drop them, or use --model {' or '.join(families_that('private'))}"
        )
    if several:
        raise ValueError("differentially private training runs in one process: drop --nproc")
    if stream:
        raise ValueError("differentially private training reads DATA in memory: drop --stream")
    if schema_file is None:
        raise ValueError(
            "--dp-epsilon needs --schema FILE: a schema inferred from DATA reveals its levels "
            "and ranges, which the guarantee does not cover (write one without the data, or "
            "review the output of `healthgym schema`)"
        )


def saved_run(run_dir: Path) -> tuple[type[RunFolderModel], dict[str, Any]] | None:
    """(model class, model.json) of the run in ``run_dir``; None where it holds none."""
    if not run_folder.has_model(run_dir):
        return None
    meta = read_model_meta(run_dir)
    return family_of(run_dir, meta), meta
