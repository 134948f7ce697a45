"""The default model's building blocks: residual MLP blocks, token embeddings and heads that
know where each token sits on its variable's scale, and the batched forms of the heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm residual MLP."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(F.gelu(self.up(self.norm(x))))
        p = self.drop.p
        if self.training and p > 0:  # nn.Dropout's masks, from uniforms: 2x faster on CPU
            h = h * (torch.rand_like(h) >= p) * (1 / (1 - p))
        return x + h


FEATURES = 9  #: smooth features of a token's place u in [0, 1]: u, sin/cos(k pi u), k=1..4


def place_features(positions: list[float], extra: int = 0) -> torch.Tensor:
    """(len(positions) + extra, FEATURES): what makes neighbouring bins look alike."""
    u = torch.tensor(positions + [0.0] * extra, dtype=torch.float32)[:, None]
    k = torch.arange(1, 5, dtype=torch.float32) * torch.pi
    return torch.cat([u, torch.sin(k * u), torch.cos(k * u)], dim=1)


class TokenEmbedding(nn.Module):
    """A learned vector per token plus a learned map of its place features (so bin 7 starts
    out close to bin 8 and a few patients suffice to learn 'the next value is near')."""

    def __init__(self, positions: list[float], width: int, extra: int = 0) -> None:
        super().__init__()
        self.table = nn.Embedding(len(positions) + extra, width)
        self.place = nn.Linear(FEATURES, width, bias=False)
        self.register_buffer("features", place_features(positions, extra), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (...) -> (..., W)
        return F.embedding(tokens, embedding_table(self))


def embedding_table(e: TokenEmbedding) -> torch.Tensor:
    """(v, W): the vector of each token of a TokenEmbedding."""
    return e.table.weight + e.place(e.features)


class TokenHead(nn.Module):
    """Logits of one token column: a free logit per token plus a smooth function of its place."""

    def __init__(self, positions: list[float], width: int) -> None:
        super().__init__()
        self.free = nn.Linear(width, len(positions))
        self.place = nn.Linear(width, FEATURES, bias=False)
        self.register_buffer("features", place_features(positions), persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (..., W) -> (..., v)
        return self.free(z) + self.place(z) @ self.features.T


def padded_heads(heads: nn.ModuleList) -> tuple[torch.Tensor, torch.Tensor]:
    """Every head as one linear map, stacked: weight (C, V, W) = free + features @ place and
    bias (C, V), V the largest vocabulary; a column's slots past its vocabulary have weight 0
    and bias -inf (probability 0)."""
    v = max(h.free.out_features for h in heads)
    weight = torch.stack(
        [F.pad(h.free.weight + h.features @ h.place.weight, (0, 0, 0, v - len(h.features)))
         for h in heads]
    )  # fmt: skip
    bias = torch.stack(
        [F.pad(h.free.bias, (0, v - len(h.features)), value=-torch.inf) for h in heads]
    )
    return weight, bias


def joined_heads(heads: nn.ModuleList) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads that read the same features as one linear map: weight (sum of v_j, W), bias."""
    weight = torch.cat([h.free.weight + h.features @ h.place.weight for h in heads])
    return weight, torch.cat([h.free.bias for h in heads])


def column_logits(heads: nn.ModuleList, z: torch.Tensor) -> torch.Tensor:
    """Logits (..., C, V) of every column at once from its features z (..., C, W) (padded
    slots -inf): `heads[j](z[..., j, :])` for all j, in one batched product."""
    weight, bias = padded_heads(heads)
    return torch.einsum("...cw,cvw->...cv", z, weight) + bias


def column_nll(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(...) summed cross-entropy over the columns of logits (..., C, V), tokens (..., C)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction="none")
    return ce.view(tokens.shape).sum(-1)


class Embeddings(nn.Module):
    """One TokenEmbedding per token column; a row's embedding is their sum (or stack)."""

    def __init__(self, positions: list[list[float]], width: int, extra: int = 0) -> None:
        super().__init__()
        self.tables = nn.ModuleList(TokenEmbedding(p, width, extra) for p in positions)
        sizes = torch.tensor([0] + [len(p) + extra for p in positions[:-1]])
        self.register_buffer("offsets", sizes.cumsum(0), persistent=False)

    def joined(self) -> torch.Tensor:
        """(sum of v_j, W): every column's table stacked; token k of column j is row
        offsets[j] + k."""
        return torch.cat([embedding_table(t) for t in self.tables])

    def stack(self, tokens: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C, W)
        return F.embedding(tokens + self.offsets, self.joined())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., W)
        return self.stack(tokens).sum(dim=-2)
