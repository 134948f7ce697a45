"""Training speed of Health Gym v1: seconds per epoch and per generator step, ours vs reference.

    python -m benchmarks.train_speed [--steps 1] [--cohorts art,demo] [--no-reference]
                                     [--no-threads] [--no-epoch] [--no-record]

Settings are Health Gym v1's (hidden and noise 128, batch 256, 5 critic updates, lambda_GP
10, lambda_C 10, thresholded correlation loss) on (a) the ART-for-HIV shape (300 x 60, 22
columns, curriculum 10..60) and (b) the demo cohort (4,000 x 12, 58 columns, curriculum
2..12). An epoch visits every curriculum length L; at L it runs ceil(pool / 256) generator
steps, all of 256 sequences but the last. Each distinct (L, batch size) is timed for
``--steps`` generator steps (median), ours and the reference alternating step by step, after
one untimed warm-up step each at the largest shape; the epoch time is the count-weighted
sum. ``--no-epoch`` skips the check that times one real ``WGANTrainer.fit`` epoch (ART, ours)
against that estimate. The reference (`benchmarks.reference_v1`) runs in the same process
with the same threads.

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
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch

from benchmarks.cohorts import ART_CURRICULUM, art_design, demo_design
from benchmarks.common import header, load, machine, matmul_peak, median, record, table, timed
from benchmarks.reference_v1 import ReferenceTrainer
from healthgym.models import v1
from healthgym.models.layout import DesignLayout
from healthgym.models.v1 import pearson_matrix
from healthgym.training import runtime
from healthgym.training.config import V1Config
from healthgym.training.runtime import cpu_threads, keep_freed_memory
from healthgym.training.trainer import WGANTrainer

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


def time_shapes(
    impls: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]],
    x: torch.Tensor,
    lengths: torch.Tensor,
    plan: Counter,
    steps: int,
) -> dict[str, dict[tuple[int, int], float]]:
    """Per implementation, median seconds of one generator step at each (L, batch size).

    Implementations alternate step by step, so a change in the machine's load hits both.
    """
    rows = x[torch.arange(x.shape[1]) < lengths[:, None]]
    real_corr = pearson_matrix(rows.double()).float()
    out: dict[str, dict[tuple[int, int], float]] = {name: {} for name in impls}
    for i, (length, b) in enumerate(sorted(plan, key=lambda k: -k[0] * k[1])):
        real = x[lengths >= length][:b, :length].contiguous()
        if i == 0:
            for step in impls.values():
                step(real, real_corr)  # warm-up: grows the heap, loads kernels
        secs: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(steps):
            for name, step in impls.items():
                secs[name].append(timed(lambda: step(real, real_corr)))  # noqa: B023
        for name, v in secs.items():
            out[name][(length, b)] = median(v)
    return out


def benchmark_cohort(
    name: str,
    data: tuple[torch.Tensor, torch.Tensor, DesignLayout],
    cfg: V1Config,
    stages: tuple[int, ...],
    steps: int,
    reference: bool,
    threads: int,
    peak: float,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Summary rows (one per implementation) and per-(L, b) rows for one cohort."""
    x, lengths, layout = data
    plan = epoch_plan(lengths, stages, cfg.batch_size)
    n_steps = sum(plan.values())
    flops = sum(n * b * length for (length, b), n in plan.items())
    flops *= flops_per_sequence_step(layout, cfg)
    impls: dict[str, Callable] = {"ours": WGANTrainer(layout, cfg)._step}
    if reference:
        impls["reference"] = ReferenceTrainer(layout, cfg).step
    with cpu_threads(threads), keep_freed_memory():
        timings = time_shapes(impls, x, lengths, plan, steps)
    summary, detail, epoch_s = [], [], {}
    for impl, per in timings.items():
        epoch_s[impl] = sum(n * per[k] for k, n in plan.items())
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
                "x faster than ref": epoch_s.get("reference", math.nan) / secs,
            }
        )
    return summary, detail


def measured_epoch(cfg: V1Config, threads: int) -> float:
    """Wall seconds of one real `WGANTrainer.fit` epoch on the ART shape (logging, checkpoint)."""
    x, lengths, layout = art_design()
    trainer = WGANTrainer(layout, V1Config(**{**cfg.to_dict(), "epochs": 1}))
    trainer.threads = threads
    with tempfile.TemporaryDirectory() as tmp:
        return timed(lambda: trainer.fit(x, lengths, tmp, progress=False))


def compare_threads(cfg: V1Config, repeats: int = 3, length: int = 20) -> list[dict[str, Any]]:
    """Ours at 1 and 2 threads, interleaved, on one ART batch (256 x ``length``)."""
    x, lengths, layout = art_design()
    trainer = WGANTrainer(layout, cfg)
    real = x[: cfg.batch_size, :length].contiguous()
    real_corr = pearson_matrix(x.reshape(-1, x.shape[-1]).double()).float()
    secs: dict[int, list[float]] = {1: [], 2: []}
    with keep_freed_memory():
        for n in secs:
            with cpu_threads(n):
                trainer._step(real, real_corr)  # warm-up per thread count
        for _ in range(repeats):
            for n in secs:
                with cpu_threads(n):
                    secs[n].append(timed(lambda: trainer._step(real, real_corr)))
    return [
        {
            "threads": n,
            "L": length,
            "batch": cfg.batch_size,
            "s/gen step (median)": median(v),
            "runs": " ".join(f"{t:.2f}" for t in v),
            "mm peak GFLOP/s": matmul_peak(n),
            "load after": load(),
        }
        for n, v in secs.items()
    ]


@contextlib.contextmanager
def _speedups(fused_penalty: bool, keep_memory: bool) -> Iterator[None]:
    """Switch this project's two step-level speed changes off (inside `keep_freed_memory`)."""
    libc, final = runtime._glibc(), v1.bilstm_final
    if not fused_penalty:  # nn.LSTM in the penalty: PyTorch's op-by-op double backward
        v1.bilstm_final = lambda h, lstm, **_: torch.cat(list(lstm(h)[1][0]), dim=-1)
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
    trainer = WGANTrainer(layout, cfg)
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
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Summary rows, per-shape rows and the matmul peak (GFLOP/s at ``threads``)."""
    peak = matmul_peak(threads, peak_size)
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
        s, det = benchmark_cohort(name, d, cfg, stages, steps, reference, threads, peak)
        summary += s
        detail += det
    return summary, detail, peak


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.train_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--steps", type=int, default=2, help="timed generator steps per (L, batch)")
    p.add_argument("--cohorts", default="art,demo", help='"art", "demo", both, or "none"')
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-reference", action="store_true")
    p.add_argument("--no-threads", action="store_true", help="skip the 1 vs 2 threads comparison")
    p.add_argument("--no-epoch", action="store_true", help="skip the real one-epoch fit")
    p.add_argument("--ablation", action="store_true", help="time the speed changes one by one")
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    info = machine()
    cohorts = [c for c in args.cohorts.split(",") if c not in ("", "none")]
    parts = [header("Training speed", "benchmarks.train_speed", argv, info)]
    if cohorts:
        summary, detail, peak = run(cohorts, args.steps, not args.no_reference, args.threads)
        parts += [
            f"Matmul peak (torch.mm 4096^2 fp32, best of 5, {args.threads} thread(s)), measured "
            f"before the cohorts: {peak:.0f} GFLOP/s (after them: "
            f"{matmul_peak(args.threads):.0f}). Epoch times extrapolated from {args.steps} "
            "timed step(s) per (L, batch).\n",
            table(summary),
            "\nPer (L, batch):\n",
            table(detail),
        ]
    if not args.no_epoch and "art" in cohorts:
        secs = measured_epoch(V1, args.threads)
        parts.append(f"\nOne real `WGANTrainer.fit` epoch, ART shape, ours: {secs:.1f} s (wall).")
    if args.ablation:
        parts += ["\nSpeed changes one by one (ours, 1 thread, interleaved):\n", table(ablation())]
    if not args.no_threads:
        parts += [
            "\nThreads (ours, ART shape, interleaved in one process):\n",
            table(compare_threads(V1)),
        ]
    parts.append(f"\nLoad average at the end: {load()}.")
    text = "\n".join(parts)
    print(text)
    if not args.no_record:
        record(text)


if __name__ == "__main__":
    main()
