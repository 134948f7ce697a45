"""Health Gym v1 training: WGAN-GP + correlation loss over a length curriculum, resumable exactly.

A run lives in ``run_dir``: ``metrics.jsonl`` (one line per generator step), ``checkpoints/``
(newest 3) and ``learning_dynamics.png``. Every random draw comes from generators owned by the
trainer and saved in checkpoints, and the batch order of each (epoch, stage) is regenerated from
the seed, so on CPU an interrupted and resumed run ends with bit-identical weights.

Under torchrun (``WORLD_SIZE`` > 1) ``fit`` trains data-parallel over the processes; see
`healthgym.training.distributed`. The single-process path is unchanged by that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from healthgym.models.layout import DesignLayout
from healthgym.models.v1 import (
    Critic,
    Generator,
    correlation_loss,
    gradient_penalty,
    pearson_matrix,
    sample_noise,
)
from healthgym.training import distributed
from healthgym.training.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from healthgym.training.config import V1Config
from healthgym.training.plots import plot_learning_dynamics
from healthgym.training.runtime import cpu_threads, keep_freed_memory, resolve_threads

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "learning_dynamics.png"
#: Values logged per generator step; the critic ones come from its last update of the step.
LOSS_NAMES = ("D_loss", "GP", "D_real", "D_fake", "G_loss", "Corr")
#: Checked against ``max_loss`` and for NaN/inf after every generator step.
GUARDED = ("D_loss", "GP", "G_loss", "Corr")
#: Trainer-owned random streams, saved in every checkpoint.
RNG_STREAMS = ("noise", "penalty", "threshold")
CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = (
    "format", "generator", "critic", "opt_generator", "opt_critic", "rng",
    "epoch", "stage", "batch", "step", "config", "layout", "data_fingerprint",
)  # fmt: skip
#: Config fields a resumed run may change (published: 100 epochs, then resumed to 200); device
#: and amp change only the arithmetic, not what is saved.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "amp"})
# Tags that keep the seed-derived streams apart.
_INIT, _SHUFFLE = 0, 1
_STREAM_TAGS = {name: 2 + i for i, name in enumerate(RNG_STREAMS)}
#: Streams each process of a distributed run draws from its own seed (its share of the batch);
#: the correlation thresholds are drawn alike on every process.
PER_RANK_STREAMS = ("noise", "penalty")
_RANK = 1000


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf or exceeded ``max_loss``; the last good checkpoint is untouched."""


@dataclass(frozen=True)
class TrainResult:
    """How a ``fit`` call ended."""

    epochs: int  #: epochs completed by the run so far (all fit calls)
    steps: int  #: generator steps done by the run so far
    stopped_early: str | None  #: None, "max_minutes" or "stop_after_steps"
    checkpoint: Path | None  #: newest checkpoint written by this call


def derive_seed(*keys: int) -> int:
    """A 64-bit seed mixed from non-negative ints, e.g. (seed, tag, epoch, stage)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0])


def stream_seed(seed: int, name: str, rank: int = 0, world: int = 1) -> int:
    """Seed of random stream ``name`` on process ``rank`` of ``world`` (world 1: as always)."""
    if world == 1 or name not in PER_RANK_STREAMS:
        return derive_seed(seed, _STREAM_TAGS[name])
    return derive_seed(seed, _STREAM_TAGS[name], _RANK, rank)


class WGANTrainer:
    """Trains a v1 :class:`Generator` against a :class:`Critic` on design tensors.

    ``threads``: torch threads while ``fit`` runs on CPU, an int or "auto" (default: the
    ``HEALTHGYM_THREADS`` environment variable, else "auto", see `training.runtime`).

    ``_stop_after_steps`` (private test hook): when set to k, ``fit`` stops cleanly after k
    generator steps of that call, exactly as if ``max_minutes`` had run out.

    Distributed (a torchrun job, see `healthgym.training.distributed`): each process draws
    its noise and penalty mixing weights from streams seeded by (seed, rank), takes
    ``batch_size / W`` patients of every global batch, and its gradients are averaged with
    DDP, so a step equals one single-process step on the whole batch, except the correlation
    loss, which each process computes on its own fakes (their losses are averaged, not
    pooled). Logged losses are averaged over processes. A checkpoint also holds every
    process's random streams (``rank_rng``) so a resume with the same W continues each one.
    """

    def __init__(self, layout: DesignLayout, config: V1Config | None = None) -> None:
        self.layout = layout
        self.config = config or V1Config()
        self.device = self.config.resolve_device()
        self.threads: int | str | None = None
        self._stop_after_steps: int | None = None
        self._ctx = distributed.Context(device=self.device)
        self._ddp: tuple[torch.nn.Module, torch.nn.Module] | None = None
        self._init_state()

    def _init_state(self) -> None:
        """Fresh seeded networks, optimizers and random streams (global RNG left untouched)."""
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, _INIT))
            self.generator = Generator(self.layout, cfg.noise_dim, cfg.hidden).to(self.device)
            self.critic = Critic(self.layout, cfg.hidden).to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=cfg.betas)
        rank, world = self._ctx.rank, self._ctx.world
        self.rngs = {
            name: torch.Generator(self.device).manual_seed(stream_seed(cfg.seed, name, rank, world))
            for name in _STREAM_TAGS
        }

    def fit(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        run_dir: str | Path,
        *,
        resume: bool = False,
        max_minutes: float | None = None,
        progress: bool = True,
        sharded: bool = False,
    ) -> TrainResult:
        """Train on x (N, T, F) in [0, 1] with per-patient lengths (N,); write the run to run_dir.

        ``resume=True`` continues from the newest loadable checkpoint (or starts fresh if there
        is none) with the same data and config (``epochs`` and ``device`` may change).
        ``max_minutes`` stops cleanly at a generator-step boundary and checkpoints the exact
        position. Raises TrainingDiverged when a loss blows up.

        In a torchrun job every process calls ``fit``; x is the whole cohort on every process,
        or with ``sharded=True`` only this process's own patients (each process a different
        shard; resume then needs the same number of processes).
        """
        with distributed.process_group(self.device) as ctx:
            self._ctx = ctx
            if ctx.distributed:
                self.device = ctx.device
            try:
                if self.device.type != "cpu":
                    return self._fit(x, lengths, run_dir, resume, max_minutes, progress, sharded)
                threads = resolve_threads(self.threads, share=ctx.world)
                with cpu_threads(threads), keep_freed_memory():
                    return self._fit(x, lengths, run_dir, resume, max_minutes, progress, sharded)
            finally:
                self._ddp = None

    def _fit(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        run_dir: str | Path,
        resume: bool,
        max_minutes: float | None,
        progress: bool,
        sharded: bool = False,
    ) -> TrainResult:
        cfg, ctx = self.config, self._ctx
        sharded = sharded and ctx.distributed  # one process holds the whole cohort anyway
        distributed.check_batch_size(cfg.batch_size, ctx)
        x, lengths, rows = self._check_data(x, lengths)
        longest = int(lengths.max())
        if sharded:
            longest = int(distributed.all_reduce(torch.tensor(longest), ctx, "max"))
        stages = cfg.resolve_curriculum(longest)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = run_dir / METRICS_FILE
        fingerprint = _fingerprint(rows, lengths)
        if sharded:  # the run's data is every shard, in rank order
            digests = "".join(distributed.gather_objects(fingerprint, ctx))
            fingerprint = hashlib.sha256(digests.encode()).hexdigest()
        self._init_state()
        epoch = stage = batch = step = 0
        if resume:
            # Rank 0 reads (and, if corrupt, sets aside) the checkpoint; all resume from it.
            loaded = load_latest(run_dir, required=CHECKPOINT_KEYS) if ctx.main else None
            loaded = distributed.broadcast_object(loaded, ctx)
            if loaded is not None:
                epoch, stage, batch, step = self._restore(*loaded, fingerprint)
            if ctx.main:
                _truncate_metrics(metrics_path, step)
        elif distributed.broadcast_object(
            ctx.main and (metrics_path.exists() or bool(list_checkpoints(run_dir))), ctx
        ):
            raise FileExistsError(f"{run_dir} holds a run; pass resume=True or use a new run_dir")

        if sharded:  # moments summed over processes: no process holds every row
            real_corr = distributed.global_pearson(rows, ctx).float().to(self.device)
        elif ctx.distributed:  # computed once, on rank 0
            f = self.layout.n_features
            real_corr = pearson_matrix(rows.double()).float() if ctx.main else torch.empty(f, f)
            real_corr = distributed.broadcast_tensor(real_corr.to(self.device), ctx)
        else:
            real_corr = pearson_matrix(rows.double()).float().to(self.device)  # (F, F), once
        del rows  # a copy of the data: not held while training
        pools = [torch.nonzero(lengths >= n).squeeze(1) for n in stages]  # patients per stage
        sizes = None
        if sharded:  # the largest pool of any process sets the number of batches per stage
            local = torch.tensor([len(p) for p in pools] + [-len(p) for p in pools])
            both = distributed.all_reduce(local, ctx, "max").cpu().tolist()
            sizes, fewest = both[: len(pools)], [-v for v in both[len(pools) :]]
            if min(fewest) == 0:
                raise ValueError(
                    f"a process holds no patient with >= {stages[fewest.index(0)]} steps: "
                    "use fewer processes, a shorter curriculum or unsharded data"
                )
            per_epoch = sum(math.ceil(n / (cfg.batch_size // ctx.world)) for n in sizes)
        else:
            per_epoch = sum(math.ceil(len(p) / cfg.batch_size) for p in pools)
        x_dev = x.to(self.device)
        if ctx.distributed:
            self._ddp = distributed.wrap(self.generator, ctx), distributed.wrap(self.critic, ctx)

        bar = tqdm(
            total=cfg.epochs * per_epoch,
            initial=step,
            disable=not progress or not ctx.main,
            unit="step",
        )
        started, done_here, stopped, ckpt = time.monotonic(), 0, None, None
        with open(metrics_path if ctx.main else os.devnull, "a") as log, bar:
            for e, s, b, ids, epoch_ends in self._schedule(pools, epoch, stage, batch, sizes):
                t0 = time.perf_counter()
                length = stages[s]
                losses = self._step(x_dev[ids.to(self.device), :length], real_corr)  # (B, L, F)
                step += 1
                self._guard(step, losses, run_dir)
                row = {"step": step, "epoch": e, "L": length, **losses}
                log.write(json.dumps({**row, "seconds": time.perf_counter() - t0}) + "\n")
                log.flush()
                bar.update()
                bar.set_postfix({k: f"{losses[k]:.3g}" for k in ("D_loss", "G_loss", "Corr")})
                done_here += 1
                stopped = self._stop_reason(started, max_minutes, done_here)
                if ctx.distributed:  # rank 0's clock decides, so all stop at the same step
                    stopped = distributed.broadcast_object(stopped, ctx)
                if epoch_ends:
                    epoch = e + 1
                    ckpt = self._save(run_dir, epoch, 0, 0, step, fingerprint)
                elif stopped:
                    ckpt = self._save(run_dir, e, s, b + 1, step, fingerprint)
                if stopped:
                    break
        if ctx.main and metrics_path.stat().st_size:
            plot_learning_dynamics(metrics_path, run_dir / PLOT_FILE)
        return TrainResult(epoch, step, stopped, ckpt)

    def _schedule(
        self,
        pools: list[torch.Tensor],
        epoch: int,
        stage: int,
        batch: int,
        sizes: list[int] | None = None,
    ) -> Iterator[tuple[int, int, int, torch.Tensor, bool]]:
        """(epoch, stage, batch, patient ids, last batch of epoch?) from a position to the end.

        Each (epoch, stage) order comes from its own seed, so a resumed run rebuilds it. In a
        distributed run the ids are this process's share of the batch; ``sizes`` (sharded
        data) are the largest pool of any process per stage.
        """
        cfg, ctx = self.config, self._ctx
        for e in range(epoch, cfg.epochs):
            for s in range(stage if e == epoch else 0, len(pools)):
                seed = derive_seed(cfg.seed, _SHUFFLE, e, s)
                if sizes is not None:
                    seed = derive_seed(cfg.seed, _SHUFFLE, e, s, _RANK, ctx.rank)
                    batches = distributed.shard_batches(
                        pools[s], cfg.batch_size, seed, ctx, sizes[s]
                    )
                elif ctx.distributed:
                    batches = distributed.rank_batches(pools[s], cfg.batch_size, seed, ctx)
                else:
                    shuffle = torch.Generator().manual_seed(seed)
                    order = pools[s][torch.randperm(len(pools[s]), generator=shuffle)]
                    batches = order.split(cfg.batch_size)
                first = batch if (e, s) == (epoch, stage) else 0
                for b in range(first, len(batches)):
                    yield e, s, b, batches[b], s == len(pools) - 1 and b == len(batches) - 1

    def _step(self, real: torch.Tensor, real_corr: torch.Tensor) -> dict[str, float]:
        """``critic_iters`` critic updates then one generator update on one real batch."""
        cfg, gen, critic = self.config, self.generator, self.critic
        # Distributed: the DDP-wrapped networks where their weights take gradients.
        train_gen, train_critic = self._ddp or (gen, critic)
        n, length, _ = real.shape
        for _ in range(cfg.critic_iters):
            with torch.no_grad(), self._autocast():  # fakes for the critic need no graph
                fake = gen(sample_noise(n, length, cfg.noise_dim, self.rngs["noise"], self.device))
            with self._autocast():
                scores = train_critic(torch.cat([real, fake])).float()  # (2n,) both at once
            d_real, d_fake = scores[:n].mean(), scores[n:].mean()
            gp = gradient_penalty(train_critic, real, fake, self.rngs["penalty"])
            d_loss = d_fake - d_real + cfg.lambda_gp * gp
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

        critic.requires_grad_(False)  # the generator update needs no critic weight gradients
        with self._autocast():
            fake = train_gen(
                sample_noise(n, length, cfg.noise_dim, self.rngs["noise"], self.device)
            )
        fake = fake.float()  # the correlation loss stays fp32 (a no-op without amp)
        corr = correlation_loss(fake, real_corr, cfg.corr_threshold, self.rngs["threshold"])
        with self._autocast():
            score = critic(fake).float()
        g_loss = -score.mean() + cfg.lambda_corr * corr
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        critic.requires_grad_(True)
        values = torch.stack([d_loss, gp, d_real, d_fake, g_loss, corr]).detach()
        if self._ctx.distributed:  # logged and guarded alike on every process
            values = distributed.all_reduce(values, self._ctx, "mean")
        return dict(zip(LOSS_NAMES, values.tolist(), strict=True))

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for a forward pass when ``config.amp``, else nothing.

        The gradient penalty runs outside it, so its interpolation, critic pass and double
        backward stay fp32, as do the losses, the correlation matrices and the weights.
        """
        if not self.config.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _guard(self, step: int, losses: dict[str, float], run_dir: Path) -> None:
        limit = self.config.max_loss
        bad = [f"{k} = {losses[k]}" for k in GUARDED if not abs(losses[k]) <= limit]  # NaN too
        if bad:
            raise TrainingDiverged(
                f"training diverged at generator step {step}: {', '.join(bad)} "
                f"(allowed: finite, |loss| <= {limit:g}); lower lr or raise max_loss. "
                f"Last good checkpoint: {latest_checkpoint(run_dir)}"
            )

    def _stop_reason(self, started: float, max_minutes: float | None, done: int) -> str | None:
        if self._stop_after_steps is not None and done >= self._stop_after_steps:
            return "stop_after_steps"
        if max_minutes is not None and time.monotonic() - started >= 60 * max_minutes:
            return "max_minutes"
        return None

    def _save(
        self, run_dir: Path, epoch: int, stage: int, batch: int, step: int, fingerprint: str
    ) -> Path:
        """Checkpoint everything needed to continue from (epoch, stage, batch), the next batch.

        Distributed: every process sends its random streams to the checkpoint (``rng`` holds
        rank 0's, ``rank_rng`` a list by rank); only rank 0 writes it.
        """
        rng = {name: g.get_state() for name, g in self.rngs.items()}
        path = checkpoint_path(run_dir, step)
        if self._ctx.distributed:
            every = distributed.gather_objects(rng, self._ctx)
            if not self._ctx.main:
                return path
        state = {
            "format": CHECKPOINT_FORMAT,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_generator": self.opt_g.state_dict(),
            "opt_critic": self.opt_d.state_dict(),
            "rng": rng,
            "epoch": epoch,
            "stage": stage,
            "batch": batch,
            "step": step,
            "config": self.config.to_dict(),
            "layout": self.layout.to_dict(),
            "data_fingerprint": fingerprint,
        }
        if self._ctx.distributed:
            state["rank_rng"] = every
        save_checkpoint(state, path)
        prune_checkpoints(run_dir)
        return path

    def _restore(
        self, path: Path, state: dict[str, Any], fingerprint: str
    ) -> tuple[int, int, int, int]:
        """Load a checkpoint into this trainer; returns its (epoch, stage, batch, step)."""
        if state["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {state['format']}")
        if DesignLayout.from_dict(state["layout"]) != self.layout:
            raise ValueError(f"checkpoint {path} was trained on another design layout")
        old, new = state["config"], self.config.to_dict()
        keys = (old.keys() | new.keys()) - RESUMABLE_CHANGES
        changed = sorted(k for k in keys if old.get(k) != new.get(k))
        if changed:
            raise ValueError(f"config differs from checkpoint {path} in {changed}")
        if state["data_fingerprint"] != fingerprint:
            raise ValueError(f"checkpoint {path} was trained on other data")
        try:
            self.generator.load_state_dict(state["generator"])
            self.critic.load_state_dict(state["critic"])
            self.opt_g.load_state_dict(state["opt_generator"])
            self.opt_d.load_state_dict(state["opt_critic"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit the networks: {e}") from e
        rank, world = self._ctx.rank, self._ctx.world
        saved = state["rng"]
        if world > 1:  # this process's streams, if the checkpoint has W of them
            by_rank = state.get("rank_rng")
            saved = by_rank[rank] if isinstance(by_rank, list) and len(by_rank) == world else {}
        for name, gen in self.rngs.items():
            try:
                gen.set_state(saved[name])
            except (RuntimeError, KeyError):
                if self._ctx.main:
                    warnings.warn(
                        f"random stream {name!r} in {path} is for another device or number of "
                        "processes; reseeding it, so this run will not match an uninterrupted one",
                        stacklevel=3,
                    )
                keys = (self.config.seed, _STREAM_TAGS[name], state["step"])
                gen.manual_seed(
                    derive_seed(*keys, _RANK, rank) if world > 1 else derive_seed(*keys)
                )
        return state["epoch"], state["stage"], state["batch"], state["step"]

    def _check_data(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validated float32 x (N, T, F), int64 lengths (N,) and the non-padding rows (n, F)."""
        x = torch.as_tensor(x, dtype=torch.float32).cpu()
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if x.ndim != 3 or x.shape[0] == 0 or x.shape[2] != self.layout.n_features:
            raise ValueError(f"x must be (N>0, T, {self.layout.n_features}), got {tuple(x.shape)}")
        if lengths.shape != x.shape[:1] or lengths.min() < 1 or lengths.max() > x.shape[1]:
            raise ValueError(f"lengths must be (N,) = ({x.shape[0]},) with values in [1, T]")
        rows = x[torch.arange(x.shape[1]) < lengths[:, None]]  # (n_rows, F), padding dropped
        if not torch.isfinite(rows).all() or rows.min() < -1e-6 or rows.max() > 1 + 1e-6:
            raise ValueError("x must be finite and in [0, 1] on every non-padding row")
        for s, e in self.layout.spans:
            if not ((rows[:, s:e].sum(1) - 1).abs() <= 1e-4).all():
                raise ValueError(f"columns [{s}, {e}) are not one-hot on every non-padding row")
        return x, lengths, rows


def _fingerprint(rows: torch.Tensor, lengths: torch.Tensor) -> str:
    """Hash of the non-padding data, so a run cannot be resumed on a different cohort."""
    h = hashlib.sha256(lengths.numpy().tobytes())
    for chunk in rows.split(65536):  # the same digest as the whole, without a copy of it
        h.update(chunk.numpy().tobytes())
    return h.hexdigest()


def _truncate_metrics(path: Path, step: int) -> None:
    """Atomically drop metric lines past ``step`` (and a line torn by a crash)."""
    if not path.exists():
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] > step:
                    break
            except (json.JSONDecodeError, KeyError):
                break
            keep.append(line if line.endswith("\n") else line + "\n")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """A trained :class:`Generator` from a checkpoint file, without a trainer or the data."""
    state = load_checkpoint(path, required=("generator", "config", "layout"))
    cfg = V1Config.from_dict(state["config"])
    gen = Generator(DesignLayout.from_dict(state["layout"]), cfg.noise_dim, cfg.hidden)
    try:
        gen.load_state_dict(state["generator"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit its own config: {e}") from e
    return gen.to(device)
