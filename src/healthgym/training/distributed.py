"""Data-parallel Health Gym v1 training with PyTorch's own ``torch.distributed``.

One process per device (GPU, or a share of the CPU cores). ``torchrun`` (or ``healthgym
train --nproc N``, which starts the same elastic launcher) sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; `process_group` joins that group: NCCL
with device ``cuda:LOCAL_RANK`` when training on CUDA, Gloo on CPU. Without those variables
(or with ``WORLD_SIZE=1``) everything here is a no-op and training is the single-process path.

What the trainer does with a group of W processes (`healthgym.training.trainer`):

- Generator and critic are wrapped in ``DistributedDataParallel`` (`wrap`), so gradients are
  averaged over the processes during ``backward``. DDP does handle the gradient penalty's double
  backward: the penalty takes ``torch.autograd.grad(D(xhat), xhat, create_graph=True)`` through
  the DDP-wrapped critic, which runs no parameter-gradient hook (only ``xhat``'s gradient is
  asked for), and the critic loss's one ``backward`` then fires every hook once with the full
  gradient (score term + penalty term). Checked by ``tests/test_distributed.py``: two Gloo
  processes match one process on the same data and noise. The generator update calls the
  *unwrapped* critic (its weights are frozen there), so the critic's DDP never waits for
  gradients that do not come.
- Each generator step takes one global batch of ``batch_size`` patients; every process gets
  ``batch_size / W`` of them (`rank_batches`, a ``DistributedSampler`` per curriculum length, or
  `shard_batches` when each process holds only its own patients).
- The correlation target is computed once on rank 0 and broadcast (`broadcast_tensor`), or,
  for sharded data, from moments summed over all processes (`global_pearson`).
- Only rank 0 writes checkpoints, ``metrics.jsonl``, the plot and the progress bar; a
  checkpoint is read by rank 0 and broadcast, so every process resumes from the same one.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

#: Waiting this long for the other processes (e.g. while rank 0 writes a plot) is an error.
TIMEOUT = timedelta(minutes=30)
#: Rows per chunk when summing moments of sharded data (bounds the float64 temporaries).
_CHUNK_ROWS = 65536


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes files."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of a running group, or of the torchrun job this process belongs to."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _context(device: torch.device, rank: int, world: int) -> Context:
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local)
    return Context(rank, world, local, device)


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Context]:
    """Join the torchrun group for the block (or reuse one already joined); world 1: no-op.

    ``device`` is the configured one; on CUDA a process of a group uses ``cuda:LOCAL_RANK``
    (whatever index was configured), on CPU the backend is Gloo. A group this call started
    is torn down when the block ends.
    """
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        yield _context(device, dist.get_rank(), world) if world > 1 else Context(device=device)
        return
    world = env_world_size()
    if world <= 1:
        yield Context(device=device)
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    ctx = _context(device, int(os.environ["RANK"]), world)
    if ctx.device.type == "cuda":
        torch.cuda.set_device(ctx.device)
    dist.init_process_group("nccl" if ctx.device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield ctx
    finally:
        dist.destroy_process_group()


def check_batch_size(batch_size: int, ctx: Context) -> None:
    """Every process takes ``batch_size / W`` patients per step: W must divide the batch."""
    if batch_size % ctx.world:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the {ctx.world} processes")


# ---- collectives (each returns its input unchanged in a single process) --------------------


def broadcast_object(obj: Any, ctx: Context, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every process."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, ctx: Context) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_tensor(t: torch.Tensor, ctx: Context, src: int = 0) -> torch.Tensor:
    """Rank ``src``'s tensor (same shape and dtype everywhere) on every process's device."""
    if not ctx.distributed:
        return t
    t = t.to(ctx.device).contiguous()
    dist.broadcast(t, src=src)
    return t


def all_reduce(t: torch.Tensor, ctx: Context, op: str = "sum") -> torch.Tensor:
    """Sum (``op="sum"``), mean or max of ``t`` over processes, on this process's device."""
    if not ctx.distributed:
        return t
    t = t.to(ctx.device).clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t / ctx.world if op == "mean" else t


def broadcast_module(module: nn.Module, ctx: Context, src: int = 0) -> None:
    """Every tensor of ``module``'s state set, in place, to rank ``src``'s."""
    if not ctx.distributed:
        return
    with torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src=src)


def wrap(module: nn.Module, ctx: Context) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` (rank 0's weights copied to all processes)."""
    from torch.nn.parallel import DistributedDataParallel

    # The networks' buffers are constant index tensors: no need to sync them every forward
    # (the keyword is `forward_sync_buffers` from torch 2.13, `broadcast_buffers` before).
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    device_ids = [ctx.device] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **{no_sync: False})


# ---- data ----------------------------------------------------------------------------------


def rank_batches(
    pool: torch.Tensor, batch_size: int, seed: int, ctx: Context
) -> list[torch.Tensor]:
    """This process's share of each global batch of ``pool`` (patient ids), shuffled by seed.

    A ``DistributedSampler`` over the pool: the shuffle is the single-process one
    (``randperm`` seeded with ``seed``), padded by wrapping round to a multiple of W, and
    process r takes every W-th patient from position r, then cuts them into batches of
    ``batch_size / W``. Global batch k is therefore the same patients whatever W is (bar the
    padding of a last, short batch), and all processes get equally many equal-sized batches.
    """
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(
        range(len(pool)), num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed
    )
    ids = torch.tensor(list(sampler), dtype=torch.long)
    return list(pool[ids].split(batch_size // ctx.world))


def shard_batches(
    pool: torch.Tensor, batch_size: int, seed: int, ctx: Context, size: int
) -> list[torch.Tensor]:
    """Batches of ``batch_size / W`` from this process's own patients (sharded data).

    Processes hold different numbers of patients, so each pads its shuffled pool by wrapping
    round to ``size``, the largest pool of any process: all get equally many batches.
    """
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))]
    order = order.repeat(math.ceil(size / len(order)))[:size]
    return list(order.split(batch_size // ctx.world))


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """Patients ``[start, stop)`` of process ``rank``: contiguous, sizes differing by <= 1."""
    return n * rank // world, n * (rank + 1) // world


def global_pearson(rows: torch.Tensor, ctx: Context, eps: float = 1e-12) -> torch.Tensor:
    """Pearson matrix (F, F), float64, of the rows of all processes together.

    Two passes over this process's rows (n, F) in chunks: the global mean, then the centred
    second moments, each summed over processes. Zero-variance columns give 0, as
    the v1 network's `pearson_matrix`, which this equals up to float64 rounding.
    """
    f = rows.shape[1]
    first = torch.zeros(f + 1, dtype=torch.float64)
    for chunk in rows.split(_CHUNK_ROWS):
        first[:f] += chunk.double().sum(0)
    first[f] = len(rows)
    first = all_reduce(first, ctx).cpu()
    n, mean = first[f], first[:f] / first[f]
    second = torch.zeros(f, f, dtype=torch.float64)
    for chunk in rows.split(_CHUNK_ROWS):
        c = chunk.double() - mean
        second += c.T @ c
    cov = all_reduce(second, ctx).cpu() / n
    var = cov.diagonal()
    sd = var.clamp_min(eps).sqrt()
    ok = var > eps
    return cov / (sd[:, None] * sd[None, :]) * (ok[:, None] & ok[None, :])


# ---- launching -----------------------------------------------------------------------------


def launch(fn: Callable[..., Any], args: Sequence[Any], nproc: int) -> dict[int, Any]:
    """Run ``fn(*args)`` in ``nproc`` processes on this machine; their return values by rank.

    The elastic launcher behind ``torchrun --standalone --nproc-per-node nproc`` (a local
    rendezvous on a free port, no restarts); ``fn`` must be importable (module level). If a
    process fails the others are stopped and ``ChildFailedError`` is raised.
    """
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="spawn",
    )
    return elastic_launch(config, fn)(*args)
