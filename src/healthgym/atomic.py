"""One way to write a file: into a temporary file beside it, then renamed over it.

A reader (or a crash) sees either the old file or the complete new one, never half of
either; the temporary file is removed when writing fails.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | Path, write: Callable[[Path], Any], *, durable: bool = True) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then rename it to ``path``.

    ``durable``: fsync the file and its folder, so the rename survives a power cut (weights,
    checkpoints, metrics); cheap enough for every file written here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` written to ``path`` atomically (UTF-8)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """``data`` written to ``path`` atomically."""
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))
