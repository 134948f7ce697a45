"""Training speed of Health Gym v1: seconds per epoch and per generator step, ours vs reference.

    python -m benchmarks.train_speed [--steps 1] [--cohorts art,demo] [--no-reference]
                                     [--threads 1,auto] [--thread-counts 1,2]
                                     [--no-threads] [--no-epoch] [--no-record]
                                     [--device cpu|cuda|auto] [--amp] [--out FILE]

Settings are Health Gym v1's (hidden and noise 128, batch 256, 5 critic updates, lambda_GP
10, lambda_C 10, thresholded correlation loss) on (a) the ART-for-HIV shape (300 x 60, 22
columns, curriculum 10..60) and (b) the demo cohort (4,000 x 12, 58 columns, curriculum
2..12). An epoch visits every curriculum length L; at L it runs ceil(pool / 256) generator
steps, all of 256 sequences but the last. Each distinct (L, batch size) is timed for
``--steps`` generator steps (median), ours and the reference alternating step by step, after
one untimed warm-up step each at the largest shape; the epoch time is the count-weighted
sum. ``--no-epoch`` skips the check that times one real ``V1Trainer.fit`` epoch (ART, ours)
against that estimate. The reference (`benchmarks.reference_v1`) runs in the same process
with the same threads. On CPU every cohort is timed at each of ``--threads`` (default: one
thread, then the library's "auto", the idle cores at the start), each against the matmul peak
at its thread count; a "Ceiling" table times PyTorch's fused LSTM alone (oneDNN) on the
critic's shape, and the threads comparison (``--thread-counts``) runs once on the machine as it
is and once beside a process that keeps one core busy.

Devices (``--device``): the same code runs on CUDA (networks, batches and random streams on
the card; clocks read after ``torch.cuda.synchronize``; the matmul peak measured there; the
card's name in the record). On CUDA the trainer's critic and generator passes use cuDNN's LSTM;
the gradient penalty's critic pass runs the hand-written biLSTM (`healthgym.models.v1.bilstm`,
a hand-written second derivative) on every device, as cuDNN RNNs have no double backward. On
CUDA a second row, "ours, GP native LSTM (cuDNN off)", times the trainer's previous penalty
path instead: ``nn.LSTM`` with cuDNN switched off, i.e. PyTorch's native CUDA LSTM (one fused
cell kernel per step, a differentiable backward; a switch in this benchmark only; on an H200
it was 2.5x slower per ART epoch, BENCHMARKS.md). ``--amp`` adds a row with
``V1Config(amp=True)``: bf16 autocast for the networks' passes, the penalty in fp32. The
reference runs on the device too (its noise is drawn there). ``--out FILE`` also writes the
record to FILE (used by benchmarks/gpu_check.sh).

FLOP count (matmuls of LSTM and Linear layers only; activations, softmax, Adam left out).
Per sequence step, with H hidden, Z noise, F design columns, E the critic's input width
(reals + embedding sizes) and K_j x e_j the soft-embedding matrices:
    g = 2*2*4H(Z + H) + 2(2H*H + H*H + H*F)          generator forward (biLSTM, head)
    c = 2*2*4H(H + H) + 2(E*H + H*H) + 2*sum_j K_j e_j  critic forward (biLSTM, MLP, embeddings)
A backward costs twice its forward (input and weight gradients); the gradient penalty costs
its forward, the input gradient (1x) and the backward through both (2x + 2x) = 6c. A
generator step with k critic updates on b sequences of length L costs
    b * L * [k (g + 6c + 6c) + 3g + 2c]
(critic update: fakes g, critic forward + backward on real and fake 2 * 3c, penalty 6c;
generator update: generator forward + backward 3g, critic forward + input gradient 2c).
The critic's output layer, once per sequence, is left out. Effective GFLOP/s = this count /
measured time, for both implementations (the reference does more work than it needs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import reference_v1
from benchmarks.cohorts import ART_CURRICULUM, art_design, demo_design
from benchmarks.common import (
    busy_process,
    header,
    load,
    machine,
    matmul_peak,
    median,
    record,
    table,
    timed,
)
from benchmarks.reference_v1 import ReferenceTrainer
from healthgym.models.layout import DesignLayout
from healthgym.models.v1 import network as v1
from healthgym.models.v1.config import V1Config
from healthgym.models.v1.network import pearson_matrix
from healthgym.models.v1.trainer import V1Trainer
from healthgym.training import runtime
from healthgym.training.runtime import cpu_threads, keep_freed_memory, resolve_threads

V1 = V1Config(device="cpu")  # Health Gym v1 settings


def flops_per_sequence_step(layout: DesignLayout, cfg: V1Config) -> float:
    """The docstring's b*L*[...] bracket: FLOPs of one generator step per sequence step."""
    h, z, f = cfg.hidden, cfg.noise_dim, layout.n_features
    emb = [(e - s, 2 if e - s == 2 else 4) for s, e in layout.spans]
    width = len(layout.real_idx) + sum(d for _, d in emb)
    g = 2 * 2 * 4 * h * (z + h) + 2 * (2 * h * h + h * h + h * f)
    c = 2 * 2 * 4 * h * (2 * h) + 2 * (width * h + h * h) + 2 * sum(k * d for k, d in emb)
    return cfg.critic_iters * (g + 12 * c) + 3 * g + 2 * c


def epoch_plan(lengths: torch.Tensor, stages: tuple[int, ...], batch: int) -> Counter:
    """(L, batch size) -> generator steps per epoch."""
    plan: Counter = Counter()
    for length in stages:
        pool = int((lengths >= length).sum())
        plan[(length, batch)] += pool // batch
        if pool % batch:
            plan[(length, pool % batch)] += 1
    return plan


#: Row names of the implementations timed.
OURS, OURS_NATIVE_GP, OURS_AMP, REFERENCE = (
    "ours",
    "ours, GP native LSTM (cuDNN off)",
    "ours, amp bf16",
    "reference",
)


def time_shapes(
    impls: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]],
    x: torch.Tensor,
    lengths: torch.Tensor,
    plan: Counter,
    steps: int,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[dict[str, dict[tuple[int, int], float]], dict[str, str]]:
    """Per implementation, median seconds of one generator step at each (L, batch size).

    Implementations alternate step by step, so a change in the machine's load hits both. One
    that raises is dropped from then on; the second result maps it to its error.
    """
    rows = x[torch.arange(x.shape[1]) < lengths[:, None]]
    real_corr = pearson_matrix(rows.double()).float().to(device)
    out: dict[str, dict[tuple[int, int], float]] = {name: {} for name in impls}
    errors: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], Any]) -> float | None:
        try:
            return timed(fn, device)
        except Exception as e:  # reported in the record; the others go on
            traceback.print_exc()
            errors[name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            return None

    for i, (length, b) in enumerate(sorted(plan, key=lambda k: -k[0] * k[1])):
        real = x[lengths >= length][:b, :length].contiguous().to(device)
        if i == 0:
            for name, step in impls.items():  # warm-up: grows the heap, loads kernels
                attempt(name, lambda: step(real, real_corr))  # noqa: B023
        secs: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(steps):
            for name, step in impls.items():
                if name not in errors:
                    t = attempt(name, lambda: step(real, real_corr))  # noqa: B023
                    if t is not None:
                        secs[name].append(t)
        for name, v in secs.items():
            if v and name not in errors:
                out[name][(length, b)] = median(v)
        if progress:
            done = ", ".join(f"{n} {out[n][(length, b)]:.3f}" for n in out if (length, b) in out[n])
            print(f"  L={length} batch={b}: s/step {done}", file=sys.stderr, flush=True)
    return out, errors


def native_final(h: torch.Tensor, lstm: nn.LSTM, **_: Any) -> torch.Tensor:
    """`bilstm_final`'s values through ``nn.LSTM`` itself, with cuDNN off (no double backward).

    On CUDA that is PyTorch's native LSTM (fused cell kernels, differentiable twice); on CPU
    oneDNN's LSTM, whose create_graph backward is an op-by-op fallback.
    """
    enabled = torch.backends.cudnn.enabled  # only this flag: `cudnn.flags` resets the others
    torch.backends.cudnn.enabled = False
    try:
        _, (h_n, _) = lstm(h)  # h_n (2, B, H)
    finally:
        torch.backends.cudnn.enabled = enabled
    return torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, 2H)


@contextlib.contextmanager
def native_penalty_lstm() -> Iterator[None]:
    """While open, the penalty's critic pass runs ``nn.LSTM`` with cuDNN off (`native_final`).

    That was the trainer's penalty path on CUDA before `Critic.forward` used the hand-written
    biLSTM on every device.

    Swaps `healthgym.models.v1.bilstm_final`, which only `Critic.forward`'s penalty branch
    calls; the graph it records keeps its ops after the swap is undone (benchmark only).
    """
    final = v1.bilstm_final
    v1.bilstm_final = native_final
    try:
        yield
    finally:
        v1.bilstm_final = final


def native_penalty(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` with `native_penalty_lstm` open around each call."""

    def run(*args: Any) -> Any:
        with native_penalty_lstm():
            return step(*args)

    return run


def reference_step(
    layout: DesignLayout, cfg: V1Config, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """The reference's generator step with its networks and random stream on ``device``.

    `ReferenceTrainer.step` asks for its noise on "cpu"; while it runs, noise is drawn and kept
    on its stream's device instead (on CPU the same numbers as before).
    """
    ref = ReferenceTrainer(layout, cfg)
    ref.generator.to(device)  # in place: the optimizers keep the same parameters
    ref.critic.to(device)
    ref.rng = torch.Generator(device).manual_seed(cfg.seed)
    draw = reference_v1.sample_noise

    def step(real: torch.Tensor, real_corr: torch.Tensor) -> None:
        reference_v1.sample_noise = lambda b, n, z, rng, _: draw(b, n, z, rng, rng.device)
        try:
            ref.step(real, real_corr)
        finally:
            reference_v1.sample_noise = draw

    return step


def implementations(
    layout: DesignLayout, cfg: V1Config, reference: bool, amp: bool, native_gp: bool
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]:
    """Generator-step functions to time, by row name; all on ``cfg``'s device."""
    impls: dict[str, Callable] = {OURS: V1Trainer(layout, cfg)._step}
    if native_gp:
        impls[OURS_NATIVE_GP] = native_penalty(V1Trainer(layout, cfg)._step)
    if amp:
        impls[OURS_AMP] = V1Trainer(layout, dataclasses.replace(cfg, amp=True))._step
    if reference:
        impls[REFERENCE] = reference_step(layout, cfg, cfg.resolve_device())
    return impls


def benchmark_cohort(
    name: str,
    data: tuple[torch.Tensor, torch.Tensor, DesignLayout],
    cfg: V1Config,
    stages: tuple[int, ...],
    steps: int,
    reference: bool,
    threads: int,
    peak: float,
    amp: bool = False,
    native_gp: bool = False,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """Summary rows (one per implementation), per-(L, b) rows and errors for one cohort."""
    x, lengths, layout = data
    device = cfg.resolve_device()
    plan = epoch_plan(lengths, stages, cfg.batch_size)
    n_steps = sum(plan.values())
    flops = sum(n * b * length for (length, b), n in plan.items())
    flops *= flops_per_sequence_step(layout, cfg)
    impls = implementations(layout, cfg, reference, amp, native_gp)
    if progress:
        print(f"{name}: {', '.join(impls)} on {device}", file=sys.stderr, flush=True)
    with cpu_threads(threads), keep_freed_memory():
        timings, errors = time_shapes(impls, x, lengths, plan, steps, device, progress)
    summary, detail, epoch_s = [], [], {}
    for impl, per in timings.items():
        complete = all(k in per for k in plan)
        epoch_s[impl] = sum(n * per[k] for k, n in plan.items()) if complete else math.nan
        detail += [
            {
                "cohort": name,
                "impl": impl,
                "L": k[0],
                "batch": k[1],
                "steps/epoch": plan[k],
                "s/step": per[k],
            }
            for k in sorted(per)
        ]
    for impl, secs in epoch_s.items():
        gflops = flops / secs / 1e9
        summary.append(
            {
                "cohort": name,
                "impl": impl,
                "threads": threads,
                "s/epoch": secs,
                "gen steps/epoch": n_steps,
                "s/gen step": secs / n_steps,
                "TFLOP/epoch": flops / 1e12,
                "GFLOP/s": gflops,
                "% of mm peak": 100 * gflops / peak,
                "x faster than ref": epoch_s.get(REFERENCE, math.nan) / secs,
            }
        )
    return summary, detail, {f"{name}, {impl}": e for impl, e in errors.items()}


def measured_epoch(cfg: V1Config, threads: int) -> float:
    """Wall seconds of one real `V1Trainer.fit` epoch on the ART shape (logging, checkpoint)."""
    x, lengths, layout = art_design()
    trainer = V1Trainer(layout, V1Config(**{**cfg.to_dict(), "epochs": 1}))
    trainer.threads = threads
    device = trainer.device
    with tempfile.TemporaryDirectory() as tmp:
        return timed(lambda: trainer.fit(x, lengths, tmp, progress=False), device)


def compare_threads(
    cfg: V1Config, counts: tuple[int, ...] = (1, 2), repeats: int = 3, length: int = 20
) -> list[dict[str, Any]]:
    """Ours at each thread count, interleaved, on one ART batch (256 x ``length``): first on
    the machine as it is, then with one competing busy process (another user's job)."""
    x, lengths, layout = art_design()
    trainer = V1Trainer(layout, cfg)
    real = x[: cfg.batch_size, :length].contiguous()
    real_corr = pearson_matrix(x.reshape(-1, x.shape[-1]).double()).float()
    rows = []
    for other in ("none", "1 busy process"):
        secs: dict[int, list[float]] = {n: [] for n in counts}
        with busy_process(other != "none"), keep_freed_memory():
            for n in secs:
                with cpu_threads(n):
                    trainer._step(real, real_corr)  # warm-up per thread count
            for _ in range(repeats):
                for n in secs:
                    with cpu_threads(n):
                        secs[n].append(timed(lambda: trainer._step(real, real_corr)))
            rows += [
                {
                    "other load": other,
                    "threads": n,
                    "L": length,
                    "batch": cfg.batch_size,
                    "s/gen step (median)": median(v),
                    "runs": " ".join(f"{t:.2f}" for t in v),
                    "x faster than 1 thread": median(secs[counts[0]]) / median(v),
                    "load after": load(),
                }
                for n, v in secs.items()
            ]
    return rows


def lstm_ceiling(cfg: V1Config, threads: int, length: int = 30, repeats: int = 3) -> dict:
    """GFLOP/s of PyTorch's own fused LSTM (oneDNN on CPU), forward and backward, on the
    critic's shape (2 x 256 sequences x ``length``, biLSTM of ``hidden``): the kernel that runs
    a third of a v1 step, and a ceiling for the step's effective throughput."""
    h = cfg.hidden
    lstm = nn.LSTM(h, h, batch_first=True, bidirectional=True)
    x = torch.randn(2 * cfg.batch_size, length, h, requires_grad=True)

    def fwd_bwd() -> None:
        _, (h_n, _) = lstm(x)
        h_n.sum().backward()

    flops = 3 * 2 * x.shape[0] * length * 2 * 4 * h * (h + h)  # forward + 2x backward, 2 dirs
    with cpu_threads(threads), keep_freed_memory():
        fwd_bwd()
        secs = median([timed(fwd_bwd) for _ in range(repeats)])
    return {
        "threads": threads,
        "shape": f"{x.shape[0]} x {length} x {h}",
        "s": secs,
        "GFLOP/s": flops / secs / 1e9,
    }


@contextlib.contextmanager
def _speedups(fused_penalty: bool, keep_memory: bool) -> Iterator[None]:
    """Switch this project's two step-level speed changes off (inside `keep_freed_memory`)."""
    libc, final = runtime._glibc(), v1.bilstm_final
    if not fused_penalty:  # nn.LSTM in the penalty: PyTorch's op-by-op double backward
        v1.bilstm_final = native_final
    if libc is not None and not keep_memory:  # glibc's defaults: large blocks unmapped on free
        libc.mallopt(runtime._M_MMAP_MAX, 65536)
        libc.mallopt(runtime._M_TRIM_THRESHOLD, 128 * 1024)
    try:
        yield
    finally:
        v1.bilstm_final = final
        if libc is not None:
            libc.mallopt(runtime._M_MMAP_MAX, 0)
            libc.mallopt(runtime._M_TRIM_THRESHOLD, 2**31 - 1)


def ablation(cfg: V1Config = V1, length: int = 30, rounds: int = 2) -> list[dict[str, Any]]:
    """Ours with the speed changes switched off one by one, interleaved (ART, 256 x ``length``).

    Each variant takes one untimed step (so the allocator settles) and one timed step per round.
    """
    x, lengths, layout = art_design()
    trainer = V1Trainer(layout, cfg)
    real = x[: cfg.batch_size, :length].contiguous()
    real_corr = pearson_matrix(x.reshape(-1, x.shape[-1]).double()).float()
    variants = {
        "before: nn.LSTM in the penalty, glibc defaults": (False, False),
        "+ freed memory kept": (False, True),
        "+ hand-written penalty biLSTM (current)": (True, True),
    }
    secs: dict[str, list[float]] = {name: [] for name in variants}
    with cpu_threads(1), keep_freed_memory():
        for _ in range(rounds):
            for name, switches in variants.items():
                with _speedups(*switches):
                    trainer._step(real, real_corr)
                    secs[name].append(timed(lambda: trainer._step(real, real_corr)))
    first = median(secs[next(iter(variants))])
    return [
        {
            "variant": name,
            "L": length,
            "batch": cfg.batch_size,
            "s/gen step (median)": median(v),
            "runs": " ".join(f"{t:.2f}" for t in v),
            "speed-up": first / median(v),
        }
        for name, v in secs.items()
    ]


def run(
    cohorts: list[str],
    steps: int = 1,
    reference: bool = True,
    threads: int = 1,
    cfg: V1Config = V1,
    data: dict[str, tuple[torch.Tensor, torch.Tensor, DesignLayout]] | None = None,
    peak_size: int = 4096,
    amp: bool = False,
    native_gp: bool | None = None,
    errors: dict[str, str] | None = None,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Summary rows, per-shape rows and the fp32 matmul peak (GFLOP/s at ``threads``).

    Runs on ``cfg``'s device. ``native_gp`` (default: on CUDA) adds the row whose penalty runs
    ``nn.LSTM`` with cuDNN off (the trainer's previous path there). Implementations that fail
    are reported in ``errors``.
    """
    device = cfg.resolve_device()
    if native_gp is None:
        native_gp = device.type == "cuda"
    peak = matmul_peak(threads, peak_size, device=device)
    summary, detail = [], []
    for name in cohorts:
        if data and name in data:
            d = data[name]
            stages = cfg.resolve_curriculum(int(d[1].max()))
        elif name == "art":
            d, stages = art_design(), ART_CURRICULUM
        else:
            d = demo_design()
            stages = cfg.resolve_curriculum(int(d[1].max()))
        s, det, err = benchmark_cohort(
            name, d, cfg, stages, steps, reference, threads, peak, amp, native_gp, progress
        )
        summary += s
        detail += det
        if errors is not None:
            errors.update(err)
    return summary, detail, peak


def _attempt(fn: Callable[[], Any]) -> Any:
    """fn(), or the first line of its error (printed in full to stderr)."""
    try:
        return fn()
    except Exception as e:  # a failed extra must not lose the rest of a device run
        traceback.print_exc()
        return f"failed: {type(e).__name__}: {e}".splitlines()[0][:200]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--steps", type=int, default=2, help="timed generator steps per (L, batch)")
    p.add_argument("--cohorts", default="art,demo", help='"art", "demo", both, or "none"')
    p.add_argument(
        "--threads",
        default="1,auto",
        help='CPU thread counts to time, comma-separated; "auto" is the library default '
        "(the idle cores at the start, healthgym.training.runtime)",
    )
    p.add_argument(
        "--thread-counts",
        default="1,2",
        help="counts for the threads comparison (idle, then with a competing busy process)",
    )
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--no-threads", action="store_true", help="skip the threads comparison")
    p.add_argument("--no-epoch", action="store_true", help="skip the real one-epoch fit")
    p.add_argument("--ablation", action="store_true", help="time the speed changes one by one")
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    p.add_argument(
        "--device", choices=("cpu", "cuda", "auto"), default="cpu", help="auto: cuda if available"
    )
    p.add_argument(
        "--amp", action="store_true", help="also time V1Config(amp=True) (bf16, penalty fp32)"
    )
    p.add_argument(
        "--no-gp-variant",
        action="store_true",
        help="on CUDA, skip the row whose penalty runs nn.LSTM with cuDNN off (previous path)",
    )
    p.add_argument("--out", type=Path, help="also write the record to this file")
    args = p.parse_args(argv)
    cfg = dataclasses.replace(V1, device=args.device)
    device = cfg.resolve_device()
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        p.error(f"--device cuda, but torch {torch.__version__} sees no CUDA device")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    info = machine(device)
    cohorts = [c for c in args.cohorts.split(",") if c not in ("", "none")]
    title = f"Training speed, {info['gpu']}" if cuda else "Training speed"
    parts = [header(title, "benchmarks.train_speed", argv, info)]
    peak_size = 8192 if cuda else 4096
    thread_counts = list(dict.fromkeys(resolve_threads(t) for t in args.threads.split(",")))
    if cuda:
        thread_counts = thread_counts[-1:]
    peaks: dict[int, tuple[float, float]] = {}
    if cohorts:
        errors: dict[str, str] = {}
        summary, detail = [], []
        for threads in thread_counts:
            rows, per_shape, peak = run(
                cohorts,
                args.steps,
                not args.no_reference,
                threads,
                cfg,
                peak_size=peak_size,
                amp=args.amp,
                native_gp=cuda and not args.no_gp_variant,
                errors=errors,
                progress=True,
            )
            summary += rows
            detail += [{"threads": threads, **row} for row in per_shape]
            peaks[threads] = (peak, matmul_peak(threads, peak_size, device=device))
        where = "on the GPU" if cuda else "at each thread count"
        text = ", ".join(
            f"{'' if cuda else f'{n} thread(s): '}{a:.0f} GFLOP/s (after the cohorts: {b:.0f})"
            for n, (a, b) in peaks.items()
        )
        note = (
            f"Matmul peak (torch.mm {peak_size}^2 fp32, best of 5, {where}), measured before "
            f"the cohorts: {text}. '% of mm peak' is against the peak at the row's thread count."
        )
        if args.amp:
            size = peak_size if cuda else 1024
            bf16 = matmul_peak(thread_counts[-1], size, device=device, dtype=torch.bfloat16)
            note += (
                f" bf16 (torch.mm {size}^2): {bf16:.0f} GFLOP/s; '% of mm peak' is against the "
                "fp32 peak in every row."
            )
        parts += [
            f"{note} Epoch times extrapolated from {args.steps} timed step(s) per (L, batch).\n",
            table(summary) if summary else "(no implementation finished)",
        ]
        if errors:
            parts.append(
                "\nFailed (no times): " + "; ".join(f"{k}: {v}" for k, v in errors.items())
            )
        if detail:
            parts += ["\nPer (L, batch):\n", table(detail)]
        if not cuda:
            ceiling = [lstm_ceiling(cfg, n) for n in thread_counts]
            for row in ceiling:
                row["% of mm peak"] = 100 * row["GFLOP/s"] / peaks[row["threads"]][0]
            parts += [
                "\nCeiling: PyTorch's fused LSTM alone (oneDNN), forward + backward, the "
                "critic's shape (FLOPs as in the docstring):\n",
                table(ceiling),
            ]
    if not args.no_epoch and "art" in cohorts:
        epochs = [(OURS, cfg)] + (
            [(OURS_AMP, dataclasses.replace(cfg, amp=True))] if args.amp else []
        )
        done = []
        for name, c in epochs:
            secs = _attempt(lambda c=c: measured_epoch(c, thread_counts[-1]))
            done.append(f"{name}: {secs:.1f} s" if isinstance(secs, float) else f"{name}: {secs}")
        parts.append(
            f"\nOne real `V1Trainer.fit` epoch, ART shape, {thread_counts[-1]} thread(s), "
            f"wall: {'; '.join(done)}."
        )
    if cuda:
        gib = torch.cuda.max_memory_allocated(device) / 2**30
        parts.append(
            "\nOn CUDA the critic and generator passes run cuDNN's LSTM; the gradient penalty's "
            "critic pass runs the hand-written biLSTM (`healthgym.models.v1.bilstm`, as on every "
            "device; cuDNN RNNs have no double backward) in `ours`. "
            f"`{OURS_NATIVE_GP}` (this benchmark's switch) runs it through `nn.LSTM` with cuDNN "
            "off instead, i.e. PyTorch's native CUDA LSTM: the trainer's previous path. "
            f"`{OURS_AMP}`: `V1Config(amp=True)`, bf16 autocast for the networks' passes, the "
            f"penalty fp32. Peak GPU memory allocated: {gib:.2f} GiB."
        )
    if args.ablation:
        if cuda:
            parts.append(
                f"\n(--ablation skipped on CUDA: the penalty change is `{OURS_NATIVE_GP}` "
                "against `ours` above; freed-memory keeping is a CPU-side change.)"
            )
        else:
            parts += [
                "\nSpeed changes one by one (ours, 1 thread, interleaved):\n",
                table(ablation()),
            ]
    if not args.no_threads and not cuda:
        parts += [
            "\nThreads (ours, ART shape, interleaved in one process; then again while another "
            "process keeps one core busy):\n",
            table(compare_threads(V1, tuple(int(n) for n in args.thread_counts.split(",")))),
        ]
    parts.append(f"\nLoad average at the end: {load()}.")
    text = "\n".join(parts)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    if not args.no_record:
        record(text)


if __name__ == "__main__":
    main()
