"""One way to write a file: into a temporary file beside it, then renamed over it.

A reader (or a crash) sees either the old file or the complete new one, never half of
either; the temporary file is removed when writing fails, and when the process is told to
stop (SIGTERM, SIGHUP) while writing: those signals raise `SystemExit` during the write, so
the cleanup runs before the process exits (``kill -9`` cannot be caught: a hidden
``.NAME.PID.tmp`` may then remain; it is never read, and the next write of NAME, or
`remove_stale_temporaries` of its folder, removes it once process PID has ended).
`write_folder_atomic` does the same for a folder (a report).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Signals that end the process by default and that a write turns into SystemExit.
_STOP_SIGNALS = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s))


def write_atomic(path: str | Path, write: Callable[[Path], Any], *, durable: bool = True) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then rename it to ``path``.

    ``durable``: fsync the file and its folder, so the rename survives a power cut (weights,
    checkpoints, metrics); cheap enough for every file written here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with stop_signals_exit():
        try:
            write(tmp)
            if durable:
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:  # name the file the caller asked for, not the temporary one
            if e.filename in (tmp, str(tmp)):
                e.filename = str(path)
            raise
        finally:
            tmp.unlink(missing_ok=True)
    if durable:
        _fsync_dir(path.parent)
    return path


def write_folder_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to fill a temporary folder, then put it in place of ``path``.

    An existing ``path`` (a folder) is replaced whole, so no stale file of it remains; the
    caller decides whether it may be. The temporary folder is removed when writing fails or
    the process is told to stop.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    with stop_signals_exit():
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            write(tmp)
            if path.exists():
                os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                if old.exists() and not path.exists():
                    os.replace(old, path)  # put the previous folder back
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(path.parent)
    return path


#: The temporaries written here: ``.NAME.PID.tmp`` (and a replaced folder's ``.NAME.PID.old``).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?:tmp|old)$")


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (of ``name`` only, if given) whose writing process
    has ended (killed with -9, or the machine stopped); those of a live process stay. The
    paths removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMPORARY.match(entry.name)
        if m is None or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (this one's included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # someone else's process, or a pid we cannot ask about: keep its file
    return True


@contextlib.contextmanager
def stop_signals_exit() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise SystemExit(128 + signal) so ``finally`` runs.

    Only where they would otherwise end the process at once (their default action), and
    only in the main thread (the one Python delivers signals to); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in _STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _exit_on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``text`` written to ``path`` atomically (UTF-8)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
