"""Crash-safe checkpoints: atomic writes, safe loads, the newest few kept, corrupt ones skipped.

Layout: ``run_dir/checkpoints/ckpt-<step>.pt`` with the optimisation step zero-padded, so
names sort by progress (every family numbers them by step).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..data.atomic import write_atomic
from .run_folder import CHECKPOINTS

KEEP = 3  #: checkpoints kept per run


class CheckpointError(ValueError):
    """A checkpoint file could not be read or lacks what it should hold; names the file."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint taken after optimisation step ``step`` lives."""
    return Path(run_dir) / CHECKPOINTS / f"ckpt-{step:09d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of a run, oldest first (leftover ``.tmp`` files are not listed)."""
    return sorted((Path(run_dir) / CHECKPOINTS).glob("ckpt-*.pt"))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint of a run, or None if it has none."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` so that ``path`` holds either the old file or the complete new one."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", required: Iterable[str] = ()
) -> dict[str, Any]:
    """Read a checkpoint (tensors and plain data only); any failure raises CheckpointError."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise CheckpointError(f"cannot load checkpoint {path}: the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot load checkpoint {path}: {_reason(e)}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds {type(state).__name__}, not a dict")
    missing = sorted(set(required) - set(state))
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks keys {missing}")
    return state


def _reason(e: Exception) -> str:
    """Why torch.load failed, in one short line (never torch's advice to unpickle it)."""
    text = str(e)
    if "Weights only load failed" in text:
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0].strip()
        return (
            "it is not a file of tensors (it holds other pickled objects, which healthgym "
            f"never loads{': ' + detail[:120] if detail else ''})"
        )
    first = text.strip().split("\n")[0][:200]
    return first or type(e).__name__


def prune_checkpoints(run_dir: str | Path, keep: int = KEEP) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink()


def load_latest(
    run_dir: str | Path, map_location: str | torch.device = "cpu", required: Iterable[str] = ()
) -> tuple[Path, dict[str, Any]] | None:
    """Newest loadable checkpoint of a run, or None if it has none.

    A corrupt checkpoint is renamed to ``*.corrupt`` (kept for inspection, out of the
    rotation) with a warning, and the previous one is tried. Raises CheckpointError when
    checkpoints exist but none loads: silently starting over would discard the run.
    """
    found = list_checkpoints(run_dir)
    for path in reversed(found):
        try:
            return path, load_checkpoint(path, map_location, required)
        except CheckpointError as e:
            path.replace(path.with_name(path.name + ".corrupt"))
            warnings.warn(
                f"{e}; moved it to {path.name}.corrupt, trying the previous one", stacklevel=2
            )
    if found:
        raise CheckpointError(f"no loadable checkpoint in {Path(run_dir) / CHECKPOINTS}")
    return None
