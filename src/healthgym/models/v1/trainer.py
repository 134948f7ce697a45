"""Health Gym v1 training: WGAN-GP + correlation loss over a length curriculum.

One epoch visits every curriculum length in turn (each length's patients shuffled from the
seed, in batches); one step is ``critic_iters`` critic updates and one generator update. The
run folder, resume, limits and checkpoints are the shared loop's (`training.loop`). Every
random draw comes from streams owned by the trainer and saved in checkpoints, so on CPU an
interrupted and resumed run ends with bit-identical weights.

Under torchrun (``WORLD_SIZE`` > 1) ``fit`` trains data-parallel over the processes; see
`healthgym.training.distributed`. The single-process path is unchanged by that.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch

from ...training import distributed
from ...training.loop import Trainer, TrainResult, fingerprint
from ...training.plots import plot_learning_dynamics
from ...training.seeding import derive_seed
from ..layout import DesignLayout
from .config import V1Config
from .network import (
    Critic,
    Generator,
    correlation_loss,
    gradient_penalty,
    pearson_matrix,
    sample_noise,
)

#: Values logged per generator step; the critic ones come from its last update of the step.
LOSS_NAMES = ("D_loss", "GP", "D_real", "D_fake", "G_loss", "Corr")
#: Trainer-owned random streams, saved in every checkpoint.
RNG_STREAMS = ("noise", "penalty", "threshold")
# Tags that keep the seed-derived streams apart.
_INIT, _SHUFFLE = 0, 1
_STREAM_TAGS = {name: 2 + i for i, name in enumerate(RNG_STREAMS)}
#: Streams each process of a distributed run draws from its own seed (its share of the batch);
#: the correlation thresholds are drawn alike on every process.
PER_RANK_STREAMS = ("noise", "penalty")
_RANK = 1000


def stream_seed(seed: int, name: str, rank: int = 0, world: int = 1) -> int:
    """Seed of random stream ``name`` on process ``rank`` of ``world`` (world 1: as always)."""
    if world == 1 or name not in PER_RANK_STREAMS:
        return derive_seed(seed, _STREAM_TAGS[name])
    return derive_seed(seed, _STREAM_TAGS[name], _RANK, rank)


class V1Trainer(Trainer):
    """Trains a v1 :class:`Generator` against a :class:`Critic` on design tensors.

    Distributed (a torchrun job, see `healthgym.training.distributed`): each process draws
    its noise and penalty mixing weights from streams seeded by (seed, rank), takes
    ``batch_size / W`` patients of every global batch, and its gradients are averaged with
    DDP, so a step equals one single-process step on the whole batch, except the correlation
    loss, which each process computes on its own fakes (their losses are averaged, not
    pooled). Logged losses are averaged over processes. A checkpoint also holds every
    process's random streams (``rank_rng``) so a resume with the same W continues each one.
    """

    family = "v1"
    distributable = True
    guarded = ("D_loss", "GP", "G_loss", "Corr")
    #: published: 100 epochs, then resumed to 200; device and amp change only the arithmetic
    resumable = frozenset({"epochs", "device", "amp"})
    shown = ("D_loss", "G_loss", "Corr")
    unit = "generator step"

    def __init__(self, layout: DesignLayout, config: V1Config | None = None) -> None:
        self.layout = layout
        self.config = config or V1Config()
        self.device = self.config.resolve_device()
        self.ctx = distributed.Context(device=self.device)
        self.shards = False
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
        rank, world = self.ctx.rank, self.ctx.world
        self.rngs = {
            name: torch.Generator(self.device).manual_seed(stream_seed(cfg.seed, name, rank, world))
            for name in _STREAM_TAGS
        }
        self.steps = 0

    def fit(self, *data: Any, sharded: bool = False, **options: Any) -> TrainResult:
        """`Trainer.fit` on x (N, T, F) in [0, 1] with per-patient lengths (N,).

        In a torchrun job every process calls ``fit``; x is the whole cohort on every process,
        or with ``sharded=True`` only this process's own patients (each process a different
        shard; resume then needs the same number of processes).
        """
        self.shards = sharded
        return super().fit(*data, **options)

    @property
    def network(self) -> Generator:
        return self.generator

    def prepare(self, x: torch.Tensor, lengths: torch.Tensor) -> str:
        """Check the data, build the curriculum pools and the correlation target; the data's
        fingerprint. Sharded: x holds only this process's patients."""
        cfg, ctx = self.config, self.ctx
        sharded = self.sharded = self.shards and ctx.distributed
        distributed.check_batch_size(cfg.batch_size, ctx)
        x, lengths, rows = self._check_data(x, lengths)
        longest = int(lengths.max())
        if sharded:
            longest = int(distributed.all_reduce(torch.tensor(longest), ctx, "max"))
        self.stages = cfg.resolve_curriculum(longest)
        digest = fingerprint(rows, lengths)
        if sharded:  # the run's data is every shard, in rank order
            digests = "".join(distributed.gather_objects(digest, ctx))
            digest = hashlib.sha256(digests.encode()).hexdigest()
        self._init_state()
        if sharded:  # moments summed over processes: no process holds every row
            real_corr = distributed.global_pearson(rows, ctx).float().to(self.device)
        elif ctx.distributed:  # computed once, on rank 0
            f = self.layout.n_features
            real_corr = pearson_matrix(rows.double()).float() if ctx.main else torch.empty(f, f)
            real_corr = distributed.broadcast_tensor(real_corr.to(self.device), ctx)
        else:
            real_corr = pearson_matrix(rows.double()).float().to(self.device)  # (F, F), once
        del rows  # a copy of the data: not held while training
        self.real_corr = real_corr
        self.pools = [torch.nonzero(lengths >= n).squeeze(1) for n in self.stages]
        self.sizes = None
        if sharded:  # the largest pool of any process sets the number of batches per stage
            local = torch.tensor([len(p) for p in self.pools] + [-len(p) for p in self.pools])
            both = distributed.all_reduce(local, ctx, "max").cpu().tolist()
            n = len(self.pools)
            self.sizes, fewest = both[:n], [-v for v in both[n:]]
            if min(fewest) == 0:
                raise ValueError(
                    f"a process holds no patient with >= {self.stages[fewest.index(0)]} steps: "
                    "use fewer processes, a shorter curriculum or unsharded data"
                )
        self.x = x.to(self.device)
        if ctx.distributed:
            self.ddp = distributed.wrap(self.generator, ctx), distributed.wrap(self.critic, ctx)
        return digest

    # ---- the loop's hooks --------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return self.config.to_dict() | {"layout": self.layout.to_dict()}

    def epoch_batches(self, epoch: int) -> list[tuple[int, torch.Tensor]]:
        """(length, patient ids) per batch: each curriculum length in turn, shuffled from the
        seed of (epoch, stage). Distributed: this process's share of each global batch."""
        cfg, ctx, out = self.config, self.ctx, []
        for s, pool in enumerate(self.pools):
            seed = derive_seed(cfg.seed, _SHUFFLE, epoch, s)
            if self.sizes is not None:
                seed = derive_seed(cfg.seed, _SHUFFLE, epoch, s, _RANK, ctx.rank)
                batches = distributed.shard_batches(pool, cfg.batch_size, seed, ctx, self.sizes[s])
            elif ctx.distributed:
                batches = distributed.rank_batches(pool, cfg.batch_size, seed, ctx)
            else:
                order = pool[
                    torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
                ]
                batches = order.split(cfg.batch_size)
            out += [(self.stages[s], ids) for ids in batches]
        return out

    def step(self, batch: tuple[int, torch.Tensor]) -> dict[str, float]:
        length, ids = batch
        self.steps += 1
        real = self.x[ids.to(self.device), :length]  # (B, L, F)
        return {"L": length, **self._step(real, self.real_corr)}

    def plot(self, metrics_path: Path, out_png: Path) -> None:
        plot_learning_dynamics(metrics_path, out_png)

    def _step(self, real: torch.Tensor, real_corr: torch.Tensor) -> dict[str, float]:
        """``critic_iters`` critic updates then one generator update on one real batch."""
        cfg, gen, critic = self.config, self.generator, self.critic
        # Distributed: the DDP-wrapped networks where their weights take gradients.
        train_gen, train_critic = self.ddp or (gen, critic)
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
        if self.ctx.distributed:  # logged and guarded alike on every process
            values = distributed.all_reduce(values, self.ctx, "mean")
        return dict(zip(LOSS_NAMES, values.tolist(), strict=True))

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for a forward pass when ``config.amp``, else nothing.

        The gradient penalty runs outside it, so its interpolation, critic pass and double
        backward stay fp32, as do the losses, the correlation matrices and the weights.
        """
        if not self.config.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def state_dict(self) -> dict[str, Any]:
        """Distributed: every process sends its random streams (``rng`` holds rank 0's,
        ``rank_rng`` a list by rank)."""
        rng = {name: g.get_state() for name, g in self.rngs.items()}
        state = {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_generator": self.opt_g.state_dict(),
            "opt_critic": self.opt_d.state_dict(),
            "rng": rng,
            "steps": self.steps,
        }
        if self.ctx.distributed:
            state["rank_rng"] = distributed.gather_objects(rng, self.ctx)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_generator"])
        self.opt_d.load_state_dict(state["opt_critic"])
        self.steps = state["steps"]
        rank, world = self.ctx.rank, self.ctx.world
        saved = state["rng"]
        if world > 1:  # this process's streams, if the checkpoint has W of them
            by_rank = state.get("rank_rng")
            saved = by_rank[rank] if isinstance(by_rank, list) and len(by_rank) == world else {}
        for name, gen in self.rngs.items():
            try:
                gen.set_state(saved[name])
            except (RuntimeError, KeyError):
                if self.ctx.main:
                    warnings.warn(
                        f"random stream {name!r} of the checkpoint is for another device or "
                        "number of processes; reseeding it, so this run will not match an "
                        "uninterrupted one",
                        stacklevel=3,
                    )
                keys = (self.config.seed, _STREAM_TAGS[name], self.steps)
                gen.manual_seed(
                    derive_seed(*keys, _RANK, rank) if world > 1 else derive_seed(*keys)
                )

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
