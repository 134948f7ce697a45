"""What every benchmark needs: the machine's description, a matmul peak, tables, BENCHMARKS.md.

Timings on a shared machine drift with other people's jobs, so every record carries the load
average, and comparisons are made within one run (same process, interleaved, medians).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Performance (issue 5): training speed, sampling, time to quality"


def machine(device: torch.device | str | None = None) -> dict[str, str]:
    """Date, commit, CPU model, core count, torch version and threads, load average.

    For a CUDA ``device`` also the card's name, the CUDA and cuDNN versions and the TF32 flags.
    """
    info = {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": commit(),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "load": load(),
    }
    if device is not None and torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
        info["cudnn"] = str(torch.backends.cudnn.version())
        info["tf32"] = (
            f"matmul {torch.backends.cuda.matmul.allow_tf32}, "
            f"cuDNN {torch.backends.cudnn.allow_tf32}"
        )
    return info


def commit() -> str:
    """The short hash of HEAD, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> str:
    """1, 5 and 15 minute load averages (runnable processes; this machine has os.cpu_count())."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def matmul_peak(
    threads: int,
    size: int = 4096,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """Best ``torch.mm`` GFLOP/s on square matrices, with ``threads`` torch threads (CPU).

    On CUDA the clock stops after a synchronize; fp32 there follows PyTorch's TF32 setting
    (off by default for matmuls).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.rand(size, size, device=device).to(dtype)
        b = torch.rand(size, size, device=device).to(dtype)
        a @ b  # warm up
        best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    finally:
        torch.set_num_threads(before)
    return 2 * size**3 / best / 1e9


@contextlib.contextmanager
def busy_process(on: bool = True) -> Iterator[None]:
    """A competing process that keeps one core busy while the block runs."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # scheduled before the timing starts
        yield
    finally:
        proc.kill()
        proc.wait()


def timed(fn: Callable[[], Any], device: torch.device | str | None = None) -> float:
    """Wall seconds of one call; on a CUDA ``device``, queued work is waited for on both sides."""
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def table(rows: list[dict[str, Any]], floats: str = "{:.3g}") -> str:
    """A Markdown table; the same text is printed and recorded."""
    cols = list(rows[0])
    cells = [
        [floats.format(r[c]) if isinstance(r[c], float) else str(r[c]) for c in cols] for r in rows
    ]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths, strict=True)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cols), sep, *(line(r) for r in cells)])


def header(title: str, module: str, argv: list[str] | None, info: dict[str, str]) -> str:
    """Title line and how, where and on what a record was made."""
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m", module, *args])
    gpu = (
        f"GPU {info['gpu']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}, TF32: {info['tf32']}), "
        if "gpu" in info
        else ""
    )
    return (
        f"### {title} ({info['date']})\n\n"
        f"`{command}` - commit {info['commit']}, {gpu}{info['cpu']} ({info['cores']} cores), "
        f"torch {info['torch']}, load average {info['load']} (at start)\n"
    )


def treatments_shuffled(cohort: Any, seed: int) -> Any:
    """The cohort with its treatments (`role: action`) permuted together among the rows
    that record them: a treatment-blind simulator's training data (the treatments carry no
    information about the patient)."""
    import numpy as np

    import healthgym as hg

    t = cohort.table.copy()
    names = [v.name for v in cohort.schema.actions]
    rows = t[names].notna().all(axis=1).to_numpy()
    order = np.random.default_rng(seed).permutation(int(rows.sum()))
    for name in names:
        t.loc[rows, name] = t.loc[rows, name].to_numpy()[order]
    return hg.Cohort(t, cohort.schema)


def publish(text: str, no_record: bool, section: str = SECTION) -> str:
    """Print a benchmark's record and, unless `no_record` (--no-record), append it to its
    section of BENCHMARKS.md (`record`); the text back, for the tests."""
    print(text)
    if not no_record:
        record(text, section=section)
    return text


def record(text: str, path: Path = BENCHMARKS_MD, section: str = SECTION) -> None:
    """Append a record at the end of `section` of BENCHMARKS.md (made if absent).

    Other sections are left as they are; the file is replaced atomically.
    """
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if section not in old:
        old = old.rstrip("\n") + f"\n\n{section}\n"
    start = old.index(section) + len(section)
    nxt = old.find("\n## ", start)
    end = len(old) if nxt < 0 else nxt + 1
    new = (
        old[:end].rstrip("\n")
        + "\n\n"
        + text.strip("\n")
        + "\n"
        + ("\n" + old[end:] if nxt >= 0 else "")
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    tmp.replace(path)
