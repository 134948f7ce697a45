"""Losses of HealthGymGAN training, all blind to padding: gradient penalty, correlation, rates.

Shapes: B batch, T steps, S static columns, D dynamic columns.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch

from ..layout import DesignLayout
from ..v1.network import correlation_loss, pearson_matrix
from .network import PairCritic


def live_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) -> (B, T) bool: True on each patient's first `length` steps."""
    return torch.arange(steps, device=lengths.device) < lengths[:, None]


def step_rows(static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, S), (B, T, D), (B,) -> (n_steps, S + D): every real step, its statics beside it."""
    t = dynamic.shape[1]
    rows = torch.cat([static[:, None, :].expand(-1, t, -1), dynamic], dim=-1)  # (B, T, S + D)
    return rows[live_mask(lengths, t)]


def span_columns(layout: DesignLayout | None) -> torch.Tensor:
    """Indices of the one-hot span columns of a block (levels and missing flags)."""
    cols = [i for s, e in layout.spans for i in range(s, e)] if layout else []
    return torch.tensor(cols, dtype=torch.long)


class Targets(NamedTuple):
    """Statistics of the real training set, computed once."""

    corr: torch.Tensor  # (S + D, S + D) Pearson matrix over real steps
    static_cols: torch.Tensor  # (K,) static span columns
    static_rates: torch.Tensor  # (K,) their shares over patients
    dynamic_cols: torch.Tensor  # (J,) dynamic span columns
    step_rates: torch.Tensor  # (T, J) their shares over the patients present at each step
    step_weight: torch.Tensor  # (T,) share of all real steps that fall on each step


def targets(
    static: torch.Tensor,
    dynamic: torch.Tensor,
    lengths: torch.Tensor,
    static_cols: torch.Tensor,
    dynamic_cols: torch.Tensor,
) -> Targets:
    live = live_mask(lengths, dynamic.shape[1]).double()  # (N, T)
    d = dynamic.double()
    count = live.sum(0)  # (T,)
    step_rates = (d[..., dynamic_cols] * live[..., None]).sum(0) / count.clamp_min(1)[:, None]
    corr = pearson_matrix(step_rows(static.double(), d, lengths)).float()
    static_rates = static.double()[:, static_cols].mean(0).float()
    weight = (count / count.sum()).float()
    return Targets(corr, static_cols, static_rates, dynamic_cols, step_rates.float(), weight)


def rate_loss(
    static_probs: torch.Tensor, dynamic_probs: torch.Tensor, lengths: torch.Tensor, tg: Targets
) -> torch.Tensor:
    """Mean |fake - real| of level and missing-flag rates: statics, and dynamics step by step.

    A WGAN matches such rates only roughly and slowly; this pins them (reals are left to the
    critic). Each step's gap is weighted by its share of real steps; steps no fake patient
    reaches in this batch are skipped.
    """
    loss = dynamic_probs.new_zeros(())
    probs = dynamic_probs[..., tg.dynamic_cols]  # (B, T, J)
    if probs.shape[-1]:
        live = live_mask(lengths, probs.shape[1]).to(probs)  # (B, T)
        count = live.sum(0)  # (T,)
        fake = (probs * live[..., None]).sum(0) / count.clamp_min(1)[:, None]  # (T, J)
        w = tg.step_weight * (count > 0)
        loss = loss + (w[:, None] * (fake - tg.step_rates).abs()).sum() / (w.sum() * fake.shape[1])
    if len(tg.static_cols):
        loss = loss + (static_probs[:, tg.static_cols].mean(0) - tg.static_rates).abs().mean()
    return loss


def pair_correlation_loss(
    static: torch.Tensor,
    dynamic: torch.Tensor,
    lengths: torch.Tensor,
    tg: Targets,
    thresholded: bool,
    rng: torch.Generator,
) -> torch.Tensor:
    """v1's correlation loss over the generated steps (padding left out), statics included."""
    return correlation_loss(step_rows(static, dynamic, lengths)[None], tg.corr, thresholded, rng)


def gradient_penalty(
    critic: PairCritic,
    real: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    rng: torch.Generator,
) -> torch.Tensor:
    """WGAN-GP of both critic scores: mean((||grad D(xhat)|| - 1)^2), one alpha per patient.

    The joint score's gradient is over (static, dynamic), the static score's over the
    statics. An interpolate spans the longer of its two patients, each zeroed past its own
    length; the critic reads nothing beyond, so padding values never enter the penalty.
    """
    (s_r, x_r, len_r), (s_f, x_f, len_f) = real, fake
    t = x_r.shape[1]
    x_r, x_f = x_r * live_mask(len_r, t)[..., None], x_f * live_mask(len_f, t)[..., None]
    a = torch.rand((len(s_r), 1), generator=rng, device=rng.device).to(s_r.device)  # (B, 1)
    s_hat = (a * s_r + (1 - a) * s_f.detach()).requires_grad_(True)  # (B, S)
    x_hat = (a[..., None] * x_r + (1 - a[..., None]) * x_f.detach()).requires_grad_(True)
    no_cudnn = x_hat.device.type == "cuda"  # cuDNN RNNs have no double backward
    with torch.backends.cudnn.flags(enabled=False) if no_cudnn else contextlib.nullcontext():
        score = critic(s_hat, x_hat, torch.maximum(len_r, len_f))  # (B, 2)
    joint = torch.autograd.grad(
        score[:, 0].sum(), (s_hat, x_hat), create_graph=True, allow_unused=True
    )  # the statics go unused when there are none
    penalty = _penalty(joint)
    if s_r.shape[1]:  # without statics the static score is a constant
        static = torch.autograd.grad(score[:, 1].sum(), (s_hat,), create_graph=True)
        penalty = penalty + _penalty(static)
    return penalty


def _penalty(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    sq = sum(g.flatten(1).pow(2).sum(1) for g in grads if g is not None)  # (B,) squared norm
    return (sq.clamp_min(1e-12).sqrt() - 1).pow(2).mean()
