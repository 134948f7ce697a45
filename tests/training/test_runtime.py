"""The CPU runtime policy: "auto" threads from the idle cores, the allocator setting."""

import os
import time

import pytest
import torch

from healthgym.training import runtime
from healthgym.training.runtime import cpu_threads, keep_freed_memory, resolve_threads


def test_runtime_threads_and_allocator(monkeypatch) -> None:
    monkeypatch.delenv("HEALTHGYM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 4)
    # "auto": the idle cores (a core counts if less than a fifth of it is busy), within 1..4.
    for idle, expected in [(4.0, 4), (2.9, 3), (1.7, 1), (0.3, 1), (None, 4)]:
        monkeypatch.setattr(runtime, "idle_cores", lambda idle=idle: idle)
        assert resolve_threads() == expected, idle
    monkeypatch.setattr(runtime, "usable_cores", lambda: 64)
    assert resolve_threads("auto") == runtime.AUTO_MAX_THREADS
    monkeypatch.setenv("HEALTHGYM_THREADS", "2")
    assert resolve_threads() == 2 and resolve_threads(3) == 3
    for bad in ("0", "many"):
        with pytest.raises(ValueError, match="threads"):
            resolve_threads(bad)
    before = torch.get_num_threads()
    with cpu_threads(before + 1), keep_freed_memory():
        assert torch.get_num_threads() == before + 1
        torch.ones(2**22).sum()
    assert torch.get_num_threads() == before


def test_idle_cores_reads_the_machine(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "_idle_cache", None)
    idle = runtime.idle_cores(window_s=0.05)
    assert idle is not None and 0.0 <= idle <= (os.cpu_count() or 1) + 1e-9
    monkeypatch.setattr(runtime, "_proc_stat_idle", lambda _: pytest.fail("not cached"))
    assert runtime.idle_cores() == idle  # a second call within the TTL reuses the reading
    assert 1 <= runtime.usable_cores() <= (os.cpu_count() or 1)


def test_idle_window_spans_the_callers_work(monkeypatch) -> None:
    """A reading opened before a command's imports replaces the sleep, and the command's own
    busy core counts as idle (it is the core the command will use)."""
    monkeypatch.setattr(runtime, "_idle_cache", None)
    runtime.open_idle_window()
    end = time.process_time() + 0.2
    while time.process_time() < end:  # this process busy, as when importing torch
        pass
    monkeypatch.setattr(runtime, "_proc_stat_idle", lambda _: pytest.fail("slept anyway"))
    idle = runtime.idle_cores()
    assert idle is not None and 0.7 <= idle <= (os.cpu_count() or 1) + 1e-9
    assert runtime._window is None  # used once
