"""The run folder: the one place that names its files and reads and writes its model.json.

A run folder holds ``model.json`` (which family, its settings, what it needs to rebuild the
network; a format version and the healthgym version that wrote it), ``schema.yaml``, the
family's encoding (``tokenizer.json`` or ``encoder.json``), ``weights.pt``, ``metrics.jsonl``,
``learning_dynamics.png`` and ``checkpoints/``. Folders written by healthgym 0.1.0 have no
format key (format 1) and load as they are.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..data.atomic import write_text_atomic

MODEL_FILE = "model.json"
SCHEMA_FILE = "schema.yaml"
#: The fitted encoding of the default family, and of the GANs.
TOKENIZER_FILE = "tokenizer.json"
ENCODER_FILE = "encoder.json"
#: The trained network's weights, every family alike: {"model": state dict}.
WEIGHTS_FILE = "weights.pt"
#: Weights files of healthgym 0.1.0 run folders, and the key holding the state dict.
LEGACY_WEIGHTS = {"generator.pt": "generator", "model.pt": "model"}
METRICS_FILE = "metrics.jsonl"
#: The default model's observation statistics, where its schema names treatments: the mean
#: and scale of every column its simulator and the RL export can show (`rl.transitions`).
OBSERVATIONS_FILE = "observations.json"
PLOT_FILE = "learning_dynamics.png"
CHECKPOINTS = "checkpoints"
#: model.json's format: 2 adds "format" and "healthgym" (the version that wrote it); the
#: folders of 0.1.0 have neither and read as format 1.
FORMAT = 2


def has_model(path: str | Path) -> bool:
    """Whether ``path`` is a run or model folder (holds a model.json)."""
    return (Path(path) / MODEL_FILE).is_file()


def enclosing_run(path: str | Path) -> Path | None:
    """The run folder that ``path`` is, or lies inside, if any (nothing is written there
    but by training)."""
    resolved = Path(path).resolve()
    return next((p for p in (resolved, *resolved.parents) if has_model(p)), None)


def check_not_foreign(path: str | Path) -> None:
    """A ValueError when ``path`` is a folder that holds files but no run: training writes
    schema.yaml, weights and plots there and would replace a user's own files. Reads only."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is not a folder: name a new or existing run folder")
    if not path.is_dir() or has_model(path):
        return
    held = sorted(p.name for p in path.iterdir())
    if held:
        raise ValueError(
            f"{path} holds {', '.join(held[:3])}{', ...' if len(held) > 3 else ''} and no "
            f"healthgym run ({MODEL_FILE}): train into a new or empty folder, so that nothing "
            "of yours is replaced"
        )


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold the run folder (made if missing) for one training process: a second one is
    refused at once. The lock is the operating system's on the folder itself (no lock file
    is left), released when the block ends or the process dies, even by kill -9."""
    import fcntl

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"{path} is in use by another training process: wait for it to end (or stop "
                "it), or train into another folder"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def read_meta(path: str | Path) -> dict[str, Any]:
    """model.json of a run folder: a mapping with a "model" name and a "config" mapping; a
    ValueError names the file when it is missing, not JSON, or from a newer format."""
    meta_path = Path(path) / MODEL_FILE
    if not meta_path.exists():
        raise ValueError(f"{path}: not a healthgym run folder (no {MODEL_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
        raise ValueError(f"{meta_path}: not a healthgym model file")
    fmt = meta.get("format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise ValueError(f"{meta_path}: format must be a positive integer, got {fmt!r}")
    if fmt > FORMAT:
        raise ValueError(
            f"{meta_path}: written by healthgym {meta.get('healthgym', '?')} (format {fmt}); "
            f"this healthgym reads formats up to {FORMAT}: upgrade healthgym to load it"
        )
    return meta


def write_meta(path: str | Path, model: str, config: dict[str, Any], **more: Any) -> None:
    """Write model.json (atomically): the family's name and settings, ``more`` beside them,
    stamped with this format and version."""
    from .. import __version__

    meta = {"format": FORMAT, "healthgym": __version__, "model": model, "config": config, **more}
    Path(path).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(path) / MODEL_FILE, json.dumps(meta, indent=1))


def read_privacy(path: str | Path) -> dict[str, Any] | None:
    """model.json's "privacy" block: {} for a run trained without one; None where the folder
    has no readable model.json."""
    try:
        block = read_meta(path).get("privacy")
    except (OSError, ValueError):
        return None
    return block if isinstance(block, dict) else {}
