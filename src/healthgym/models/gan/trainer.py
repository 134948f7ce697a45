"""HealthGymGAN training: WGAN-GP on (statics, sequence) pairs with masks; length by likelihood.

Per generator step: `critic_iters` critic updates on one real batch (fresh fakes each), then
one generator update on -D(fake) + correlation and rate losses + the length head's
negative log-likelihood of the real (statics, length) pairs. After training, the level and
missing rates are calibrated (`calibration.py`). The run folder, resume, limits and
checkpoints are the shared loop's (`training.loop`); every random draw comes from
trainer-owned streams saved in checkpoints and the batch order of each epoch is rebuilt from
the seed, so on CPU a resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...data.atomic import write_text_atomic
from ...training.loop import Trainer, fingerprint
from ...training.plots import plot_learning_dynamics
from ...training.seeding import derive_seed
from ..layout import DesignLayout
from .calibration import calibrate_rates
from .config import GANConfig
from .losses import (
    Targets,
    gradient_penalty,
    live_mask,
    pair_correlation_loss,
    rate_loss,
    span_columns,
    targets,
)
from .network import Generator, PairCritic, draw

#: Values logged per generator step; the critic ones come from its last update of the step.
#: D_real/D_fake are the joint critic's mean scores, W_static the static critic's estimate
#: of the Wasserstein distance between real and generated statics.
LOSS_NAMES = (
    "D_loss", "GP", "D_real", "D_fake", "W_static", "G_loss", "Corr", "Rates", "Len_NLL",
)  # fmt: skip
RNG_STREAMS = ("noise", "penalty", "threshold")
CALIBRATION_FILE = "calibration.json"
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


class GANTrainer(Trainer):
    """Trains a HealthGymGAN `Generator` against a `PairCritic` on encoded cohort arrays."""

    family = "gan"
    guarded = ("D_loss", "GP", "G_loss", "Corr", "Rates", "Len_NLL")
    #: more epochs, another device, sampling settings
    resumable = frozenset({"epochs", "device", "condition_max_draws", "condition_tolerance"})
    shown = ("D_loss", "G_loss", "Rates")
    unit = "generator step"

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

    def prepare(self, static: Any, dynamic: Any, lengths: Any) -> str:
        """Static (N, S), dynamic (N, T, D) in [0, 1] and lengths (N,) in 1..T."""
        static, dynamic, lengths = self._check_data(static, dynamic, lengths)
        digest = fingerprint(static, dynamic[live_mask(lengths, dynamic.shape[1])], lengths)
        self._init_state(lengths)
        cols = [span_columns(layout) for layout in self.layouts]
        self.targets = Targets(
            *(t.to(self.device) for t in targets(static, dynamic, lengths, *cols))
        )
        self.data = [t.to(self.device) for t in (static, dynamic, lengths)]
        return digest

    @property
    def network(self) -> Generator:
        return self.generator

    # ---- the loop's hooks --------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        layouts = layouts_dict(*self.layouts) | {"max_length": self.max_length}
        return self.config.to_dict() | {"layouts": layouts}

    def epoch_batches(self, epoch: int) -> list[torch.Tensor]:
        shuffle = torch.Generator().manual_seed(derive_seed(self.config.seed, _SHUFFLE, epoch))
        return list(
            torch.randperm(len(self.data[2]), generator=shuffle).split(self.config.batch_size)
        )

    def step(self, batch: torch.Tensor) -> dict[str, float]:
        ids = batch.to(self.device)
        return self._step(tuple(t[ids] for t in self.data), self.targets)

    def finish(self, run_dir: Path) -> bool:
        """Calibrate the rates (calibration.py); the newest checkpoint then holds the result.
        A resumed run zeroes the offsets again, so it still trains as an uninterrupted one."""
        cfg = self.config
        if not cfg.calibration_patients:
            return False
        rng = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, _CALIBRATE))
        gaps = calibrate_rates(
            self.generator, self.targets, cfg.calibration_patients, cfg.calibration_rounds, rng
        )
        write_text_atomic(run_dir / CALIBRATION_FILE, json.dumps({"max_rate_gap": gaps}))
        return True

    def plot(self, metrics_path: Path, out_png: Path) -> None:
        plot_learning_dynamics(metrics_path, out_png)

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_generator": self.opt_g.state_dict(),
            "opt_critic": self.opt_d.state_dict(),
            "rng": {name: g.get_state() for name, g in self.rngs.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.generator.static_offset.zero_()  # calibration comes after training only
        self.generator.step_offset.zero_()
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_generator"])
        self.opt_d.load_state_dict(state["opt_critic"])
        for name, gen in self.rngs.items():
            gen.set_state(state["rng"][name])

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
        return dict(zip(LOSS_NAMES, torch.stack(values).detach().tolist(), strict=True))

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
