"""Health Gym v1 training: WGAN-GP + correlation loss over a length curriculum, resumable exactly.

A run lives in ``run_dir``: ``metrics.jsonl`` (one line per generator step), ``checkpoints/``
(newest 3) and ``learning_dynamics.png``. Every random draw comes from generators owned by the
trainer and saved in checkpoints, and the batch order of each (epoch, stage) is regenerated from
the seed, so on CPU an interrupted and resumed run ends with bit-identical weights.
"""

from __future__ import annotations

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
#: Config fields a resumed run may change (published: 100 epochs, then resumed to 200).
RESUMABLE_CHANGES = frozenset({"epochs", "device"})
# Tags that keep the seed-derived streams apart.
_INIT, _SHUFFLE = 0, 1
_STREAM_TAGS = {name: 2 + i for i, name in enumerate(RNG_STREAMS)}


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


class WGANTrainer:
    """Trains a v1 :class:`Generator` against a :class:`Critic` on design tensors.

    ``threads``: torch threads while ``fit`` runs on CPU, an int or "auto" (default: the
    ``HEALTHGYM_THREADS`` environment variable, else "auto", see `training.runtime`).

    ``_stop_after_steps`` (private test hook): when set to k, ``fit`` stops cleanly after k
    generator steps of that call, exactly as if ``max_minutes`` had run out.
    """

    def __init__(self, layout: DesignLayout, config: V1Config | None = None) -> None:
        self.layout = layout
        self.config = config or V1Config()
        self.device = self.config.resolve_device()
        self.threads: int | str | None = None
        self._stop_after_steps: int | None = None
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
        self.rngs = {
            name: torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, tag))
            for name, tag in _STREAM_TAGS.items()
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
    ) -> TrainResult:
        """Train on x (N, T, F) in [0, 1] with per-patient lengths (N,); write the run to run_dir.

        ``resume=True`` continues from the newest loadable checkpoint (or starts fresh if there
        is none) with the same data and config (``epochs`` and ``device`` may change).
        ``max_minutes`` stops cleanly at a generator-step boundary and checkpoints the exact
        position. Raises TrainingDiverged when a loss blows up.
        """
        if self.device.type != "cpu":
            return self._fit(x, lengths, run_dir, resume, max_minutes, progress)
        with cpu_threads(resolve_threads(self.threads)), keep_freed_memory():
            return self._fit(x, lengths, run_dir, resume, max_minutes, progress)

    def _fit(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        run_dir: str | Path,
        resume: bool,
        max_minutes: float | None,
        progress: bool,
    ) -> TrainResult:
        cfg = self.config
        x, lengths, rows = self._check_data(x, lengths)
        stages = cfg.resolve_curriculum(int(lengths.max()))
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = run_dir / METRICS_FILE
        fingerprint = _fingerprint(rows, lengths)
        self._init_state()
        epoch = stage = batch = step = 0
        if resume:
            loaded = load_latest(run_dir, required=CHECKPOINT_KEYS)
            if loaded is not None:
                epoch, stage, batch, step = self._restore(*loaded, fingerprint)
            _truncate_metrics(metrics_path, step)
        elif metrics_path.exists() or list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} holds a run; pass resume=True or use a new run_dir")

        real_corr = pearson_matrix(rows.double()).float().to(self.device)  # (F, F), once
        pools = [torch.nonzero(lengths >= n).squeeze(1) for n in stages]  # patients per stage
        per_epoch = sum(math.ceil(len(p) / cfg.batch_size) for p in pools)
        x_dev = x.to(self.device)

        bar = tqdm(total=cfg.epochs * per_epoch, initial=step, disable=not progress, unit="step")
        started, done_here, stopped, ckpt = time.monotonic(), 0, None, None
        with open(metrics_path, "a") as log, bar:
            for e, s, b, ids, epoch_ends in self._schedule(pools, epoch, stage, batch):
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
                if epoch_ends:
                    epoch = e + 1
                    ckpt = self._save(run_dir, epoch, 0, 0, step, fingerprint)
                elif stopped:
                    ckpt = self._save(run_dir, e, s, b + 1, step, fingerprint)
                if stopped:
                    break
        if metrics_path.stat().st_size:
            plot_learning_dynamics(metrics_path, run_dir / PLOT_FILE)
        return TrainResult(epoch, step, stopped, ckpt)

    def _schedule(
        self, pools: list[torch.Tensor], epoch: int, stage: int, batch: int
    ) -> Iterator[tuple[int, int, int, torch.Tensor, bool]]:
        """(epoch, stage, batch, patient ids, last batch of epoch?) from a position to the end.

        Each (epoch, stage) order comes from its own seed, so a resumed run rebuilds it.
        """
        cfg = self.config
        for e in range(epoch, cfg.epochs):
            for s in range(stage if e == epoch else 0, len(pools)):
                shuffle = torch.Generator().manual_seed(derive_seed(cfg.seed, _SHUFFLE, e, s))
                order = pools[s][torch.randperm(len(pools[s]), generator=shuffle)]
                batches = order.split(cfg.batch_size)
                first = batch if (e, s) == (epoch, stage) else 0
                for b in range(first, len(batches)):
                    yield e, s, b, batches[b], s == len(pools) - 1 and b == len(batches) - 1

    def _step(self, real: torch.Tensor, real_corr: torch.Tensor) -> dict[str, float]:
        """``critic_iters`` critic updates then one generator update on one real batch."""
        cfg, gen, critic = self.config, self.generator, self.critic
        n, length, _ = real.shape
        for _ in range(cfg.critic_iters):
            with torch.no_grad():  # fakes for the critic need no generator graph
                fake = gen(sample_noise(n, length, cfg.noise_dim, self.rngs["noise"], self.device))
            scores = critic(torch.cat([real, fake]))  # (2n,) one pass for both
            d_real, d_fake = scores[:n].mean(), scores[n:].mean()
            gp = gradient_penalty(critic, real, fake, self.rngs["penalty"])
            d_loss = d_fake - d_real + cfg.lambda_gp * gp
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

        critic.requires_grad_(False)  # the generator update needs no critic weight gradients
        fake = gen(sample_noise(n, length, cfg.noise_dim, self.rngs["noise"], self.device))
        corr = correlation_loss(fake, real_corr, cfg.corr_threshold, self.rngs["threshold"])
        g_loss = -critic(fake).mean() + cfg.lambda_corr * corr
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        critic.requires_grad_(True)
        values = torch.stack([d_loss, gp, d_real, d_fake, g_loss, corr]).detach().tolist()
        return dict(zip(LOSS_NAMES, values, strict=True))

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
        """Checkpoint everything needed to continue from (epoch, stage, batch), the next batch."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_generator": self.opt_g.state_dict(),
            "opt_critic": self.opt_d.state_dict(),
            "rng": {name: g.get_state() for name, g in self.rngs.items()},
            "epoch": epoch,
            "stage": stage,
            "batch": batch,
            "step": step,
            "config": self.config.to_dict(),
            "layout": self.layout.to_dict(),
            "data_fingerprint": fingerprint,
        }
        path = checkpoint_path(run_dir, step)
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
        for name, gen in self.rngs.items():
            try:
                gen.set_state(state["rng"][name])
            except (RuntimeError, KeyError):
                warnings.warn(
                    f"random stream {name!r} in {path} is for another device; reseeding it, "
                    "so this run will not match an uninterrupted one",
                    stacklevel=3,
                )
                gen.manual_seed(derive_seed(self.config.seed, _STREAM_TAGS[name], state["step"]))
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
    h.update(rows.numpy().tobytes())
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
