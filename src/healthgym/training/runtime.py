"""CPU runtime settings for training and sampling: torch threads and glibc's allocator.

Threads: on the 2-core development machine, with other jobs running, two torch threads stalled
in OpenMP barriers (a v1 generator step took 5.6x longer than with one thread; 10-100x was seen
elsewhere), and the thread count changes float results bit for bit, so "auto" means one thread
on CPU, whatever the core count; ``HEALTHGYM_THREADS=N`` (or a ``threads=N`` setting) asks
for N.

Allocator: LSTM training allocates tensors of tens of MB. glibc serves those with ``mmap`` and
returns them on free, so every step faults its memory in again (measured: ~20% of a step in
kernel time). While training, freed memory is kept for reuse instead; the default is restored
afterwards and the excess returned to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator

import torch

THREADS_ENV = "HEALTHGYM_THREADS"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


def resolve_threads(setting: int | str | None = None) -> int:
    """Torch threads for CPU work: ``setting``, else $HEALTHGYM_THREADS, else "auto" (1)."""
    value = setting if setting is not None else os.environ.get(THREADS_ENV, "auto")
    if value == "auto":
        return 1
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"threads must be 'auto' or a positive integer, got {value!r}")
    return n


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Within the block, glibc keeps freed memory for reuse instead of unmapping it."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        for param, value in _GLIBC_DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only (not musl)
    except (OSError, AttributeError):
        return None
    return libc
