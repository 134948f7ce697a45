"""Health Gym v1 networks and losses: biLSTM generator, biLSTM Wasserstein critic, GP, corr loss.

Shapes: B batch, L sequence length, F design columns, Z noise size, H hidden size.
All randomness comes from explicit ``torch.Generator`` objects so runs are reproducible.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from ...training.runtime import cpu_threads, resolve_threads
from ..layout import DesignLayout
from .bilstm import bilstm_final

#: Rows per generator forward when sampling: oneDNN's CPU LSTM is faster per row at 256 rows
#: than at 1,024 (benchmarks/sample_speed.py); chunks stay batch_size.
_FORWARD_ROWS = 256
#: Set while `gradient_penalty` runs the critic: only the input gradient is taken first.
_PENALTY: contextvars.ContextVar[bool] = contextvars.ContextVar("penalty", default=False)


class Generator(nn.Module):
    """Noise sequence -> design rows; output activations make every row schema-true."""

    def __init__(self, layout: DesignLayout, noise_dim: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.layout, self.noise_dim = layout, noise_dim
        self.lstm = nn.LSTM(noise_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, layout.n_features),
        )
        # Spans of equal width take one softmax: their logits are gathered into (spans, width)
        # blocks. Outputs are laid out [reals, block 1, block 2, ...] and `unpermute` puts them
        # back in design-column order with one gather (no in-place writes).
        n, widths = len(layout.real_idx), sorted({e - s for s, e in layout.spans})
        self.blocks = [(sum(e - s == k for s, e in layout.spans), k) for k in widths]
        grouped = list(layout.real_idx)
        for k in widths:
            grouped += [i for s, e in layout.spans if e - s == k for i in range(s, e)]
        self.register_buffer("real_idx", torch.tensor(layout.real_idx, dtype=torch.long))
        # Not saved: derived from the layout. Checkpoints written before the width blocks hold
        # an "unpermute" for the older order; it is dropped on load, never used.
        self.register_buffer("unpermute", torch.argsort(torch.tensor(grouped)), False)
        self.register_buffer("span_idx", torch.tensor(grouped[n:], dtype=torch.long), False)
        self.register_load_state_dict_pre_hook(_drop_saved_order)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, L, Z) in [0, 1) -> rows (B, L, F): sigmoid on reals, softmax on each span."""
        h, _ = self.lstm(z)  # (B, L, 2H)
        logits = self.head(h)  # (B, L, F)
        parts = [torch.sigmoid(logits.index_select(-1, self.real_idx))]  # (B, L, R)
        if self.blocks:
            spans = logits.index_select(-1, self.span_idx)  # (B, L, F - R) grouped by width
            sizes = [count * width for count, width in self.blocks]
            for block, shape in zip(spans.split(sizes, -1), self.blocks, strict=True):
                parts.append(torch.softmax(block.unflatten(-1, shape), dim=-1).flatten(-2))
        return torch.cat(parts, dim=-1).index_select(-1, self.unpermute)  # (B, L, F)


def _drop_saved_order(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    state_dict.pop(prefix + "unpermute", None)


class Critic(nn.Module):
    """Design rows -> one unbounded score per sequence (Wasserstein critic, no sigmoid)."""

    def __init__(self, layout: DesignLayout, hidden: int = 128) -> None:
        super().__init__()
        self.layout = layout
        # Soft embedding (one-hot or softmax row @ E.weight) stays differentiable for fakes and
        # for the real/fake interpolations of the gradient penalty.
        self.embeds = nn.ModuleList(
            nn.Embedding(e - s, 2 if e - s == 2 else 4) for s, e in layout.spans
        )
        n = len(layout.real_idx)
        d_in = n + sum(emb.embedding_dim for emb in self.embeds)
        self.mlp = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.1),
        )
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 1)
        # The MLP's input [reals, span_1 @ E_1, span_2 @ E_2, ...] is x @ P for one (F, d_in)
        # matrix P: ones at (real, its slot), each E_j in its span's rows. P is rebuilt from the
        # embeddings in every forward and folded into the first Linear, so a row costs one
        # product instead of one per span (the per-span products were ~10% of a demo step).
        rows, cols, col = [], [], n
        for (s, e), emb in zip(layout.spans, self.embeds, strict=True):
            k, d = e - s, emb.embedding_dim
            rows.append(torch.arange(s, e).repeat_interleave(d))  # E_j row-major
            cols.append(torch.arange(col, col + d).repeat(k))
            col += d
        base = torch.zeros(layout.n_features, d_in)
        base[list(layout.real_idx), torch.arange(n)] = 1.0
        self.register_buffer("input_base", base, persistent=False)
        self.register_buffer("embed_rows", torch.cat(rows or [torch.zeros(0)]).long(), False)
        self.register_buffer("embed_cols", torch.cat(cols or [torch.zeros(0)]).long(), False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, F) -> score (B,). With ``lengths`` (B,), steps past each length are ignored."""
        weights = [emb.weight.flatten() for emb in self.embeds]
        project = self.input_base  # (F, d_in)
        if weights:
            project = project.index_put((self.embed_rows, self.embed_cols), torch.cat(weights))
        first = self.mlp[0]
        h = self.mlp[1:](F.linear(x, first.weight @ project.T, first.bias))  # (B, L, H)
        if lengths is None and _PENALTY.get():
            # The penalty differentiates this graph twice; nn.LSTM's double backward is an
            # op-by-op fallback on CPU and unsupported by cuDNN, so use the LSTM with a
            # hand-written second derivative (faster than cuDNN-off too; BENCHMARKS.md, GPU).
            h_n = bilstm_final(h, self.lstm, input_grad_only=True)
            return self.out(h_n).squeeze(-1)
        if lengths is not None:
            h = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(h)  # h_n (2, B, H): forward and backward final states
        return self.out(torch.cat([h_n[0], h_n[1]], dim=-1)).squeeze(-1)  # (B,)


def sample_noise(
    batch: int, length: int, noise_dim: int, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """U(0, 1) noise (batch, length, noise_dim), drawn on the generator's device, sent to device."""
    z = torch.rand((batch, length, noise_dim), generator=generator, device=generator.device)
    return z.to(device)


def pearson_matrix(rows: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation (F, F) of rows (n, F); entries of zero-variance columns are 0, not NaN.

    The variance is clamped before the square root so gradients stay finite for constant columns.
    """
    centered = rows - rows.mean(dim=0, keepdim=True)  # (n, F)
    var = centered.pow(2).mean(dim=0)  # (F,)
    z = centered / var.clamp_min(eps).sqrt()  # (n, F) standardised
    corr = z.T @ z / rows.shape[0]  # (F, F)
    ok = var > eps
    return corr * (ok[:, None] & ok[None, :])


def correlation_loss(
    fake: torch.Tensor,
    real_corr: torch.Tensor,
    thresholded: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean |corr(fake rows) - real_corr| over all F x F entries; fake (B, L, F).

    When ``thresholded`` (the 2025 variant) both matrices pass c -> min(t, |c|) * sign(c) with a
    fresh t ~ U(0, 1) per entry, so weak correlations count fully and strong ones only partly.
    """
    fake_corr = pearson_matrix(fake.reshape(-1, fake.shape[-1]))  # (F, F)
    if thresholded:
        if generator is None:
            raise ValueError("thresholded correlation loss needs a torch.Generator")
        t = torch.rand(real_corr.shape, generator=generator, device=generator.device)
        t = t.to(fake.device)
        fake_corr = torch.minimum(t, fake_corr.abs()) * fake_corr.sign()
        real_corr = torch.minimum(t, real_corr.abs()) * real_corr.sign()
    return (fake_corr - real_corr).abs().mean()


def gradient_penalty(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """WGAN-GP: mean((||grad D(xhat)|| - 1)^2), xhat between real and fake, (B, L, F) each.

    One alpha per sequence; the norm is over the flattened L x F. The critic's LSTM runs with
    a hand-written second derivative here (`healthgym.models.bilstm`) on every device: cuDNN
    RNNs have no double backward and the native one is an op-by-op fallback.
    """
    alpha = torch.rand((real.shape[0], 1, 1), generator=generator, device=generator.device)
    alpha = alpha.to(real.device)
    xhat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    token = _PENALTY.set(True)
    try:
        score = critic(xhat)  # (B,)
    finally:
        _PENALTY.reset(token)
    (grad,) = torch.autograd.grad(score.sum(), xhat, create_graph=True)  # (B, L, F)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def generate(
    generator: Generator,
    n: int,
    length: int,
    layout: DesignLayout | None = None,
    *,
    seed: int = 0,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``n`` synthetic sequences as float32 arrays (b, length, F), b <= batch_size.

    Batching bounds memory. Noise comes from a CPU generator seeded with ``seed``, so a seed
    gives the same noise on every device. ``layout``, if given, must equal the generator's
    (guards against a checkpoint trained on another schema). ``device`` moves the generator.
    """
    if layout is not None and layout != generator.layout:
        raise ValueError("layout does not match the generator's layout")
    if n < 0 or length < 1 or batch_size < 1:
        raise ValueError(f"bad n={n}, length={length} or batch_size={batch_size}")
    if device is not None:
        generator.to(device)
    return _generate(generator, n, length, seed, batch_size)


def _generate(
    generator: Generator, n: int, length: int, seed: int, batch_size: int
) -> Iterator[np.ndarray]:
    dev = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    threads = resolve_threads() if dev.type == "cpu" else None
    for start in range(0, n, batch_size):
        z = sample_noise(min(batch_size, n - start), length, generator.noise_dim, rng, dev)
        # Threads set per batch, not across a yield: the caller's code runs in between.
        with torch.no_grad(), cpu_threads(threads) if threads else contextlib.nullcontext():
            out = torch.cat([generator(part) for part in z.split(_FORWARD_ROWS)])
        yield out.cpu().numpy()
