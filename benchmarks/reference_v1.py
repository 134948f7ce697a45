"""The published Health Gym v1 training step, rewritten from its description, as a timing baseline.

Two choices make it the published code (docs/healthgym-v1.md, "Known weaknesses"): each LSTM
direction is a Python loop over time calling an LSTM cell module (gates = x2h(x_t) + h2h(h),
as a hand-written cell), because cuDNN RNNs could not be differentiated twice; and the fakes
of the critic updates are not detached, so each critic backward also runs through the
generator. Everything else (sizes, losses, penalty, Adam, the critic frozen during the
generator update) is ours, with one softmax and one embedding product per categorical
variable, as the published networks have them. A timing ratio against `V1Trainer` measures
those two choices plus `healthgym.models.v1`'s own speed changes (one softmax per span width,
the soft embeddings folded into the critic's first layer; BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import nn

from healthgym.models.layout import DesignLayout
from healthgym.models.v1.config import V1Config
from healthgym.models.v1.network import correlation_loss, gradient_penalty, sample_noise


class Cell(nn.Module):
    """One LSTM step, written out: (x_t, (h, c)) -> (h, c)."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.x2h = nn.Linear(n_in, 4 * hidden)
        self.h2h = nn.Linear(hidden, 4 * hidden)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, g, o = (self.x2h(x) + self.h2h(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class LoopBiLSTM(nn.Module):
    """x (B, L, I) -> (outputs (B, L, 2H), last forward and backward states (B, 2H))."""

    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.fwd, self.bwd = Cell(n_in, hidden), Cell(n_in, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, _ = x.shape
        outs: list[list[torch.Tensor]] = [[], []]
        finals = []
        for cell, steps, out in (
            (self.fwd, range(length), outs[0]),
            (self.bwd, reversed(range(length)), outs[1]),
        ):
            h = c = x.new_zeros(b, self.hidden)
            for t in steps:
                h, c = cell(x[:, t], (h, c))
                out.append(h)
            finals.append(h)
        seq = torch.cat([torch.stack(outs[0], 1), torch.stack(outs[1][::-1], 1)], dim=-1)
        return seq, torch.cat(finals, dim=-1)


class RefGenerator(nn.Module):
    """v1's generator with the looped biLSTM."""

    def __init__(self, layout: DesignLayout, noise_dim: int, hidden: int) -> None:
        super().__init__()
        self.layout, self.noise_dim = layout, noise_dim
        self.lstm = LoopBiLSTM(noise_dim, hidden)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, layout.n_features),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.lstm(z)[0])
        out = logits.clone()
        out[..., list(self.layout.real_idx)] = torch.sigmoid(
            logits[..., list(self.layout.real_idx)]
        )
        for s, e in self.layout.spans:
            out[..., s:e] = torch.softmax(logits[..., s:e], dim=-1)
        return out


class RefCritic(nn.Module):
    """v1's critic (soft embeddings, MLP, biLSTM, linear score) with the looped biLSTM."""

    def __init__(self, layout: DesignLayout, hidden: int) -> None:
        super().__init__()
        self.layout = layout
        self.embeds = nn.ModuleList(
            nn.Embedding(e - s, 2 if e - s == 2 else 4) for s, e in layout.spans
        )
        d_in = len(layout.real_idx) + sum(emb.embedding_dim for emb in self.embeds)
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.1),
        )
        self.lstm = LoopBiLSTM(hidden, hidden)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[..., list(self.layout.real_idx)]]
        parts += [
            x[..., s:e] @ emb.weight
            for (s, e), emb in zip(self.layout.spans, self.embeds, strict=True)
        ]
        return self.out(self.lstm(self.mlp(torch.cat(parts, dim=-1)))[1]).squeeze(-1)


class ReferenceTrainer:
    """One published-style generator step at a time (no run folder, no checkpoints)."""

    def __init__(self, layout: DesignLayout, config: V1Config) -> None:
        self.config = config
        torch.manual_seed(config.seed)
        self.generator = RefGenerator(layout, config.noise_dim, config.hidden)
        self.critic = RefCritic(layout, config.hidden)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=config.betas)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=config.lr, betas=config.betas)
        self.rng = torch.Generator().manual_seed(config.seed)

    def step(self, real: torch.Tensor, real_corr: torch.Tensor) -> None:
        """``critic_iters`` critic updates, then one generator update, on one batch (B, L, F)."""
        cfg, gen, critic = self.config, self.generator, self.critic
        n, length, _ = real.shape
        for _ in range(cfg.critic_iters):
            fake = gen(sample_noise(n, length, cfg.noise_dim, self.rng, "cpu"))  # not detached
            gp = gradient_penalty(critic, real, fake, self.rng)
            d_loss = critic(fake).mean() - critic(real).mean() + cfg.lambda_gp * gp
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()  # also through the generator: the published waste
            self.opt_d.step()
        critic.requires_grad_(False)
        fake = gen(sample_noise(n, length, cfg.noise_dim, self.rng, "cpu"))
        corr = correlation_loss(fake, real_corr, cfg.corr_threshold, self.rng)
        g_loss = -critic(fake).mean() + cfg.lambda_corr * corr
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        critic.requires_grad_(True)
