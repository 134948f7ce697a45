"""HealthGymGAN: WGAN-GP on (statics, sequence) pairs with masks; length head by likelihood.

Per generator step: `critic_iters` critic updates on one real batch (fresh fakes each), then
one generator update on -D(fake) + correlation and rate losses + the length head's
negative log-likelihood of the real (statics, length) pairs. A run lives in `run_dir` like
a v1 run (`metrics.jsonl`, `checkpoints/`, `learning_dynamics.png`); every random draw comes
from trainer-owned generators saved in checkpoints and the batch order of each epoch is
rebuilt from the seed, so on CPU a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from healthgym.models.conditional import Generator, PairCritic, draw
from healthgym.models.layout import DesignLayout
from healthgym.schema import write_text_atomic
from healthgym.training.calibration import calibrate_rates
from healthgym.training.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from healthgym.training.conditional_config import GANConfig
from healthgym.training.conditional_losses import (
    Targets,
    gradient_penalty,
    live_mask,
    pair_correlation_loss,
    rate_loss,
    span_columns,
    targets,
)
from healthgym.training.plots import plot_learning_dynamics
from healthgym.training.runtime import cpu_threads, keep_freed_memory, resolve_threads
from healthgym.training.trainer import (
    METRICS_FILE,
    PLOT_FILE,
    TrainingDiverged,
    TrainResult,
    _truncate_metrics,
    derive_seed,
)

#: Values logged per generator step; the critic ones come from its last update of the step.
#: D_real/D_fake are the joint critic's mean scores, W_static the static critic's estimate
#: of the Wasserstein distance between real and generated statics.
LOSS_NAMES = (
    "D_loss", "GP", "D_real", "D_fake", "W_static", "G_loss", "Corr", "Rates", "Len_NLL",
)  # fmt: skip
#: Checked against `max_loss` and for NaN/inf after every generator step.
GUARDED = ("D_loss", "GP", "G_loss", "Corr", "Rates", "Len_NLL")
RNG_STREAMS = ("noise", "penalty", "threshold")
CALIBRATION_FILE = "calibration.json"
CHECKPOINT_FORMAT = 1
CHECKPOINT_KEYS = (
    "format", "generator", "critic", "opt_generator", "opt_critic", "rng",
    "epoch", "batch", "step", "config", "layouts", "data_fingerprint",
)  # fmt: skip
#: Config fields a resumed run may change: more epochs, another device, sampling settings.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "condition_max_draws", "condition_tolerance"})
#: Smallest length probability the length head starts from (lengths never seen in training).
LENGTH_PRIOR_FLOOR = 1e-6
# Tags that keep the seed-derived streams apart (distinct from v1's, not that it matters).
_INIT, _SHUFFLE, _CALIBRATE = 10, 11, 15
_STREAM_TAGS = {name: 12 + i for i, name in enumerate(RNG_STREAMS)}

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # static (B, S), dynamic (B, T, D), lengths


def layouts_dict(static: DesignLayout | None, dynamic: DesignLayout) -> dict[str, Any]:
    return {"static": static.to_dict() if static else None, "dynamic": dynamic.to_dict()}


def build_generator(
    static: DesignLayout | None, dynamic: DesignLayout, max_length: int, cfg: GANConfig
) -> Generator:
    return Generator(
        static, dynamic, max_length, cfg.noise_dim, cfg.hidden, cfg.tau, cfg.hard_spans
    )


class ConditionalTrainer:
    """Trains a HealthGymGAN `Generator` against a `PairCritic` on encoded cohort arrays."""

    def __init__(
        self,
        static_layout: DesignLayout | None,
        dynamic_layout: DesignLayout,
        max_length: int,
        config: GANConfig | None = None,
    ) -> None:
        self.layouts = (static_layout, dynamic_layout)
        self.max_length = max_length
        self.config = config or GANConfig()
        self.device = self.config.resolve_device()
        self._init_state(None)

    def _init_state(self, lengths: torch.Tensor | None) -> None:
        """Fresh seeded networks, optimizers and random streams (global RNG left untouched).

        With the training `lengths`, the length head starts at their empirical distribution.
        """
        cfg, (s_layout, d_layout) = self.config, self.layouts
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(cfg.seed, _INIT))
            gen = build_generator(s_layout, d_layout, self.max_length, cfg)
            critic = PairCritic(gen.n_static, gen.n_dynamic, cfg.hidden)
        if lengths is not None:
            share = torch.bincount(lengths - 1, minlength=self.max_length).double()
            share = (share / share.sum()).clamp_min(LENGTH_PRIOR_FLOOR)
            with torch.no_grad():
                gen.length_head.net[-1].bias.copy_(share.log())
        self.generator, self.critic = gen.to(self.device), critic.to(self.device)
        betas = cfg.betas
        self.opt_g = torch.optim.Adam(gen.parameters(), lr=cfg.lr_generator, betas=betas)
        self.opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr_critic, betas=betas)
        self.rngs = {
            name: torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, tag))
            for name, tag in _STREAM_TAGS.items()
        }

    def fit(
        self,
        static: torch.Tensor,
        dynamic: torch.Tensor,
        lengths: torch.Tensor,
        run_dir: str | Path,
        *,
        resume: bool = False,
        max_minutes: float | None = None,
        progress: bool = True,
    ) -> TrainResult:
        """Train on static (N, S), dynamic (N, T, D) in [0, 1] and lengths (N,) in 1..T.

        `resume=True` continues from the newest loadable checkpoint (or starts fresh if there
        is none) with the same data and config (see RESUMABLE_CHANGES). `max_minutes` stops
        cleanly at a generator-step boundary and checkpoints the exact position. Raises
        TrainingDiverged when a loss blows up. On CPU it runs with the thread and allocator
        policy of `training.runtime` (the idle cores unless HEALTHGYM_THREADS says otherwise).
        """
        args = (static, dynamic, lengths, run_dir, resume, max_minutes, progress)
        if self.device.type != "cpu":
            return self._fit(*args)
        with cpu_threads(resolve_threads()), keep_freed_memory():
            return self._fit(*args)

    def _fit(
        self,
        static: torch.Tensor,
        dynamic: torch.Tensor,
        lengths: torch.Tensor,
        run_dir: str | Path,
        resume: bool,
        max_minutes: float | None,
        progress: bool,
    ) -> TrainResult:
        cfg = self.config
        static, dynamic, lengths = self._check_data(static, dynamic, lengths)
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = run_dir / METRICS_FILE
        fingerprint = _fingerprint(static, dynamic, lengths)
        self._init_state(lengths)
        epoch = batch = step = 0
        if resume:
            loaded = load_latest(run_dir, required=CHECKPOINT_KEYS)
            if loaded is not None:
                epoch, batch, step = self._restore(*loaded, fingerprint)
            _truncate_metrics(metrics_path, step)
        elif metrics_path.exists() or list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} holds a run; pass resume=True or use a new run_dir")

        cols = [span_columns(layout) for layout in self.layouts]
        tg = Targets(*(t.to(self.device) for t in targets(static, dynamic, lengths, *cols)))
        data = [t.to(self.device) for t in (static, dynamic, lengths)]
        per_epoch = math.ceil(len(lengths) / cfg.batch_size)
        bar = tqdm(total=cfg.epochs * per_epoch, initial=step, disable=not progress, unit="step")
        started, stopped, ckpt = time.monotonic(), None, None
        with open(metrics_path, "a") as log, bar:
            for e, b, ids, epoch_ends in self._schedule(len(lengths), epoch, batch):
                t0 = time.perf_counter()
                ids = ids.to(self.device)
                losses = self._step(tuple(t[ids] for t in data), tg)
                step += 1
                self._guard(step, losses, run_dir)
                row = {"step": step, "epoch": e, **losses, "seconds": time.perf_counter() - t0}
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.update()
                bar.set_postfix({k: f"{losses[k]:.3g}" for k in ("D_loss", "G_loss", "Rates")})
                stopped = self._stop_reason(started, max_minutes)
                if epoch_ends:
                    epoch = e + 1
                    ckpt = self._save(run_dir, epoch, 0, step, fingerprint)
                elif stopped:
                    ckpt = self._save(run_dir, e, b + 1, step, fingerprint)
                if stopped:
                    break
        if cfg.calibration_patients:
            self._calibrate(tg, run_dir, ckpt)
        if metrics_path.stat().st_size:
            plot_learning_dynamics(metrics_path, run_dir / PLOT_FILE)
        return TrainResult(epoch, step, stopped, ckpt)

    def _calibrate(self, tg: Targets, run_dir: Path, ckpt: Path | None) -> None:
        """Calibrate the rates (training/calibration.py) and put the result in the newest
        checkpoint; a resumed run zeroes the offsets again, so it still trains as an
        uninterrupted one would.
        """
        cfg = self.config
        rng = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, _CALIBRATE))
        gaps = calibrate_rates(
            self.generator, tg, cfg.calibration_patients, cfg.calibration_rounds, rng
        )
        write_text_atomic(run_dir / CALIBRATION_FILE, json.dumps({"max_rate_gap": gaps}))
        if ckpt is not None:
            self._save(run_dir, *self._position)

    def _schedule(self, n: int, epoch: int, batch: int) -> Iterator[tuple[int, int, Any, bool]]:
        """(epoch, batch, patient ids, last batch of epoch?) from a position to the end."""
        cfg = self.config
        for e in range(epoch, cfg.epochs):
            shuffle = torch.Generator().manual_seed(derive_seed(cfg.seed, _SHUFFLE, e))
            batches = torch.randperm(n, generator=shuffle).split(cfg.batch_size)
            for b in range(batch if e == epoch else 0, len(batches)):
                yield e, b, batches[b], b == len(batches) - 1

    def _step(self, real: Batch, tg: Targets) -> dict[str, float]:
        """`critic_iters` critic updates, then one generator update, on one real batch."""
        cfg, gen, critic = self.config, self.generator, self.critic
        s_real, x_real, len_real = real
        n = len(len_real)
        for _ in range(cfg.critic_iters):
            with torch.no_grad():  # fakes for the critic need no generator graph
                fake = draw(gen, n, self.rngs["noise"])
            fake_pair = (fake.static, fake.dynamic, fake.lengths)
            scores = critic(
                torch.cat([s_real, fake.static]),
                torch.cat([x_real, fake.dynamic]),
                torch.cat([len_real, fake.lengths]),
            )  # (2n, 2) one pass for both; columns: joint and static-only scores
            d_real, d_fake = scores[:n].mean(0), scores[n:].mean(0)  # (2,) each
            gp = gradient_penalty(critic, real, fake_pair, self.rngs["penalty"])
            d_loss = (d_fake - d_real).sum() + cfg.lambda_gp * gp
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

        critic.requires_grad_(False)  # the generator update needs no critic weight gradients
        fake = draw(gen, n, self.rngs["noise"])
        adversarial = -critic(fake.static, fake.dynamic, fake.lengths).mean(0).sum()
        corr = pair_correlation_loss(
            fake.static, fake.dynamic, fake.lengths, tg, cfg.corr_threshold, self.rngs["threshold"]
        )
        rates = rate_loss(fake.static_probs, fake.dynamic_probs, fake.lengths, tg)
        len_nll = F.cross_entropy(gen.length_logits(s_real), len_real - 1)
        g_loss = adversarial + cfg.lambda_corr * corr + cfg.lambda_rates * rates
        self.opt_g.zero_grad(set_to_none=True)
        (g_loss + len_nll).backward()
        self.opt_g.step()
        critic.requires_grad_(True)
        w_static = d_real[1] - d_fake[1]
        values = [d_loss, gp, d_real[0], d_fake[0], w_static, g_loss, corr, rates, len_nll]
        values = torch.stack(values)
        return dict(zip(LOSS_NAMES, values.detach().tolist(), strict=True))

    def _guard(self, step: int, losses: dict[str, float], run_dir: Path) -> None:
        limit = self.config.max_loss
        for name in GUARDED:
            value = losses[name]
            if not math.isfinite(value) or abs(value) > limit:
                raise TrainingDiverged(
                    f"training diverged at generator step {step}: {name} = {value} "
                    f"(allowed: finite, |loss| <= {limit:g}); lower the learning rates or raise "
                    f"max_loss. Last good checkpoint: {latest_checkpoint(run_dir)}"
                )

    def _stop_reason(self, started: float, max_minutes: float | None) -> str | None:
        if max_minutes is not None and time.monotonic() - started >= 60 * max_minutes:
            return "max_minutes"
        return None

    def _save(self, run_dir: Path, epoch: int, batch: int, step: int, fingerprint: str) -> Path:
        """Checkpoint everything needed to continue from (epoch, batch), the next batch."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_generator": self.opt_g.state_dict(),
            "opt_critic": self.opt_d.state_dict(),
            "rng": {name: g.get_state() for name, g in self.rngs.items()},
            "epoch": epoch,
            "batch": batch,
            "step": step,
            "config": self.config.to_dict(),
            "layouts": layouts_dict(*self.layouts) | {"max_length": self.max_length},
            "data_fingerprint": fingerprint,
        }
        path = checkpoint_path(run_dir, step)
        save_checkpoint(state, path)
        self._position = (epoch, batch, step, fingerprint)
        prune_checkpoints(run_dir)
        return path

    def _restore(self, path: Path, state: dict[str, Any], fingerprint: str) -> tuple[int, int, int]:
        """Load a checkpoint into this trainer; returns its (epoch, batch, step)."""
        if state["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {state['format']}")
        if state["layouts"] != layouts_dict(*self.layouts) | {"max_length": self.max_length}:
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
            self.generator.static_offset.zero_()  # calibration comes after training only
            self.generator.step_offset.zero_()
            self.critic.load_state_dict(state["critic"])
            self.opt_g.load_state_dict(state["opt_generator"])
            self.opt_d.load_state_dict(state["opt_critic"])
            for name, gen in self.rngs.items():
                gen.set_state(state["rng"][name])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this run: {e}") from e
        return state["epoch"], state["batch"], state["step"]

    def _check_data(self, static: Any, dynamic: Any, lengths: Any) -> Batch:
        """Validated float32 static (N, S), dynamic (N, T, D) and int64 lengths (N,)."""
        static = torch.as_tensor(static, dtype=torch.float32).cpu()
        dynamic = torch.as_tensor(dynamic, dtype=torch.float32).cpu()
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        s_layout, d_layout = self.layouts
        n, t = len(lengths), self.max_length
        n_s, n_d = (s_layout.n_features if s_layout else 0), d_layout.n_features
        if static.shape != (n, n_s) or dynamic.shape != (n, t, n_d) or n == 0:
            raise ValueError(
                f"expected static (N, {n_s}), dynamic (N, {t}, {n_d}) and lengths (N,) with "
                f"N > 0; got {tuple(static.shape)}, {tuple(dynamic.shape)}, {tuple(lengths.shape)}"
            )
        if lengths.min() < 1 or lengths.max() > t:
            raise ValueError(f"lengths must lie in 1..{t}")
        for name, block in (("static", static), ("dynamic", dynamic[live_mask(lengths, t)])):
            inside = ((block >= -1e-6) & (block <= 1 + 1e-6)).all()  # False on NaN
            if not (torch.isfinite(block).all() and inside):
                raise ValueError(f"the {name} block must be finite and in [0, 1]")
        return static, dynamic, lengths


def _fingerprint(static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> str:
    """Hash of the data (padding left out), so a run cannot be resumed on another cohort."""
    h = hashlib.sha256(lengths.numpy().tobytes())
    h.update(static.numpy().tobytes())
    h.update(dynamic[live_mask(lengths, dynamic.shape[1])].numpy().tobytes())
    return h.hexdigest()
