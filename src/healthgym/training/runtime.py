"""CPU runtime settings for training and sampling: torch threads and glibc's allocator.

Threads: "auto" (the default) takes the cores that are idle when a fit or sample starts, at
most `AUTO_MAX_THREADS`: more threads speed up training on idle cores, but threads on a core
another process keeps busy stall every other thread in OpenMP barriers, so busy cores are
left out (the thread-scaling measurements: BENCHMARKS.md, docs/distributed.md). The thread count
changes float results bit for bit: for runs that must repeat exactly across machines or
loads, pin it with ``HEALTHGYM_THREADS=N`` (or a ``threads=N`` setting).

Allocator: LSTM training allocates tensors of tens of MB. glibc serves those with ``mmap`` and
returns them on free, so every step faults its memory in again (a measurable share of a
step spent in the kernel). While training, freed memory is kept for reuse instead; the
default is restored afterwards and the excess returned to the system.

This module imports torch only when it sets threads, so a command can open its idle-core
reading (`open_idle_window`) before it imports anything heavy.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

THREADS_ENV = "HEALTHGYM_THREADS"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


#: Most threads "auto" takes: beyond 8 the small ops gain little (BENCHMARKS.md, thread scaling).
AUTO_MAX_THREADS = 8
#: An idle-core reading is reused for this many seconds (sampling in a loop measures once).
_IDLE_TTL_S = 30.0
_idle_cache: tuple[float, float] | None = None  # (monotonic time, idle cores)
#: A reading opened by `open_idle_window`: (monotonic time, /proc/stat ticks (total, idle),
#: this process's CPU seconds); it replaces the sleep when it has run at least this long.
_MIN_WINDOW_S = 0.1
_window: tuple[float, tuple[int, int], float] | None = None


def resolve_threads(setting: int | str | None = None, share: int = 1) -> int:
    """Torch threads for CPU work: ``setting``, else $HEALTHGYM_THREADS, else "auto".

    "auto": the usable cores (affinity and cgroup quota) that are idle now, at least 1 and at
    most `AUTO_MAX_THREADS`; a core counts as idle when less than a fifth of it is in use.
    ``share``: processes starting together on this machine (distributed training), which
    split the idle cores between them.
    """
    value = setting if setting is not None else os.environ.get(THREADS_ENV, "auto")
    if value == "auto":
        idle = idle_cores()
        free = usable_cores() if idle is None else min(usable_cores(), math.floor(idle + 0.2))
        return max(1, min(free // share, AUTO_MAX_THREADS))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"threads must be 'auto' or a positive integer, got {value!r}")
    return n


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def open_idle_window() -> None:
    """Start the idle-core reading now, so that it spans the work a command does anyway
    (importing torch, loading a run: a second or more) instead of a 0.2 s sleep later on.
    This process's own CPU time in the window counts as idle: it is the caller's core."""
    global _window
    ticks = _proc_stat_ticks()
    _window = None if ticks is None else (time.monotonic(), ticks, time.process_time())


def idle_cores(window_s: float = 0.2) -> float | None:
    """Cores left idle by every process over ``window_s`` seconds, or since
    `open_idle_window`; None where unknown.

    Linux: from /proc/stat; elsewhere: CPU count minus the 1-minute load average.
    """
    global _idle_cache, _window
    now = time.monotonic()
    if _idle_cache is not None and now - _idle_cache[0] < _IDLE_TTL_S:
        return _idle_cache[1]
    window, _window = _window, None
    if window is not None and now - window[0] >= _MIN_WINDOW_S:
        idle = _window_idle(*window)
    else:
        idle = _proc_stat_idle(window_s)
    if idle is None and hasattr(os, "getloadavg"):
        idle = max(0.0, (os.cpu_count() or 1) - os.getloadavg()[0])
    if idle is not None:
        _idle_cache = (now, idle)
    return idle


def _proc_stat_ticks() -> tuple[int, int] | None:
    """(all, idle) CPU ticks since boot, summed over cores; None where unreadable."""
    try:
        with open("/proc/stat") as f:  # cpu  user nice system idle iowait irq softirq steal
            ticks = [int(v) for v in f.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]
    except (OSError, ValueError, IndexError):
        return None


def _proc_stat_idle(window_s: float) -> float | None:
    start = _proc_stat_ticks()
    if start is None:  # no /proc/stat: nothing to wait for
        return None
    time.sleep(window_s)
    return _idle_between(start, _proc_stat_ticks())


def _window_idle(opened: float, ticks: tuple[int, int], cpu_s: float) -> float | None:
    """Idle cores since `open_idle_window`, plus the share of a core this process used."""
    idle = _idle_between(ticks, _proc_stat_ticks())
    own = (time.process_time() - cpu_s) / max(time.monotonic() - opened, 1e-9)
    return None if idle is None else min(idle + own, float(os.cpu_count() or 1))


def _idle_between(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    if start is None or end is None or end[0] <= start[0]:
        return None
    return (end[1] - start[1]) / (end[0] - start[0]) * (os.cpu_count() or 1)


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count."""
    import torch

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
