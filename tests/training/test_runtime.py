"""The CPU runtime policy: "auto" threads from the idle cores, the allocator setting."""

import os
from types import SimpleNamespace

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
    busy core counts as idle (it is the core the command will use). The clock and /proc/stat
    are scripted, so the machine's real load does not matter."""
    clock = {"monotonic": 100.0, "process": 5.0}
    ticks = iter([(10_000, 4_000), (10_200, 4_030)])  # 200 ticks of 2 cores: 0.3 core idle
    fake = SimpleNamespace(
        monotonic=lambda: clock["monotonic"], process_time=lambda: clock["process"]
    )
    monkeypatch.setattr(runtime, "time", fake)
    monkeypatch.setattr(runtime, "_proc_stat_ticks", lambda: next(ticks))
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(runtime, "_idle_cache", None)
    runtime.open_idle_window()
    clock["monotonic"] += 0.5  # the caller imports for half a second, on one core
    clock["process"] += 0.5
    monkeypatch.setattr(runtime, "_proc_stat_idle", lambda _: pytest.fail("slept anyway"))
    assert runtime.idle_cores() == pytest.approx(0.3 + 1.0)  # idle + the caller's own core
    assert runtime._window is None  # used once
