"""Drawing patients from a trained `PatientModel`.

The sampler reads the same parameters in the form sampling needs, computed once per call:
each embedding module as one table per column, every column's table stacked into one (so a
step's tokens are one lookup), and each head as one matrix (free + features @ place, divided
by the temperature). A token is drawn by inverse CDF from one uniform, and every uniform of
a batch is drawn in one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernel import AGES, SEEN
from .layers import Embeddings
from .network import SequenceModel, StaticModel


def joined_tables(emb: Embeddings) -> tuple[torch.Tensor, torch.Tensor]:
    """Every column's table stacked (sum of v_j, W) and each column's first row (C,)."""
    return emb.joined(), emb.offsets


def head_matrices(heads: nn.ModuleList, temperature: float) -> list[tuple[torch.Tensor, ...]]:
    """Each head as (weight (v, W), bias (v,)) of one linear map, scaled by 1 / temperature."""
    return [
        (
            (h.free.weight + h.features @ h.place.weight) / temperature,
            h.free.bias / temperature,
        )
        for h in heads
    ]


def _mlp(x: torch.Tensor, blocks: nn.Sequential, norm: nn.LayerNorm) -> torch.Tensor:
    """`norm(blocks(x))` in evaluation mode (no dropout), without module calls."""
    for b in blocks:
        h = F.layer_norm(x, b.norm.normalized_shape, b.norm.weight, b.norm.bias, b.norm.eps)
        x = x + F.linear(F.gelu(F.linear(h, b.up.weight, b.up.bias)), b.down.weight, b.down.bias)
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def pick(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B,) tokens, token i with probability softmax(logits)_i, from uniforms u (B,) in [0, 1).

    Inverse CDF in float64: the target u * total stays below the total (u < 1 - 2^-24 as
    float32), so the first index whose cumulative sum exceeds it has a positive probability.
    """
    cdf = torch.softmax(logits, dim=1).cumsum(1, dtype=torch.float64)
    target = (u.double() * cdf[:, -1]).unsqueeze(1)
    return torch.searchsorted(cdf, target, right=True).squeeze(1)


@torch.no_grad()
def draw_statics(
    model: StaticModel, tokens: torch.Tensor, rng: torch.Generator, temperature: float = 1.0
) -> torch.Tensor:
    """Fill the unknown columns (holding v_j) of tokens (B, S), one column at a time."""
    tokens = tokens.clone()
    b, n = tokens.shape
    unknown = torch.tensor(model.vocab, device=tokens.device)
    table, offsets = joined_tables(model.embed)
    heads = head_matrices(model.heads, temperature)
    u = torch.rand(b, n, generator=rng, device=tokens.device)
    for j in range(n):
        todo = tokens[:, j] == unknown[j]
        if todo.any():
            h = _mlp(F.embedding(tokens + offsets, table).sum(1), model.blocks, model.norm)
            drawn = pick(F.linear(h, *heads[j]), u[:, j])
            tokens[:, j] = torch.where(todo, drawn, tokens[:, j])
    return tokens


@torch.no_grad()
def draw_steps(
    model: SequenceModel,
    static: torch.Tensor,
    lengths: torch.Tensor,
    rng: torch.Generator,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Steps (B, T, D) given static tokens (B, S) and lengths (B,); zeros past each length.
    With `model.last`, each column's variable's last observed tokens, whether there is one,
    the steps since and the sum and count of its observed places are kept as it draws, as
    `LastValue.history` computes them from the steps."""
    b, steps, d = static.shape[0], int(lengths.max()), len(model.vocab)
    dev = static.device
    c = model.static_context(static, b)  # (B, W)
    step_table, step_at = joined_tables(model.step_in)
    column_table = model.column_in.joined()
    previous_table, previous_at = joined_tables(model.previous)
    heads = head_matrices(model.heads, temperature)
    first = model.same.argmax(1)  # (D,): the first token column of each column's variable
    u = torch.rand(steps, d, b, generator=rng, device=dev).double()
    tables = column_table.split(model.vocab)  # column j's rows, as views
    out = torch.zeros(b, model.max_length, d, dtype=torch.long, device=dev)
    x, h = torch.zeros_like(c), None
    before = c.new_zeros(d, b, c.shape[1])  # (D, B, W): each column's variable one step back
    kernel = model.last
    if kernel is not None:
        last = torch.zeros(b, d, dtype=torch.long, device=dev)  # (B, D) last observed tokens
        has = torch.zeros(b, d, dtype=torch.bool, device=dev)
        age = torch.zeros(b, d, dtype=torch.long, device=dev)
        total, count = torch.zeros(b, d, device=dev), torch.zeros(b, d, device=dev)
        # each head and its column's kernel coefficients as one linear map; the temperature
        # divides the sum
        heads = [
            (torch.cat([w, kernel.weight[j]]), torch.cat([b_, kernel.bias[j]]))
            for j, (w, b_) in enumerate(head_matrices(model.heads, 1.0))
        ]
        coarse = kernel.first.tolist()
        # columns whose values' total probability the kernel would change (`combine`)
        shifted = ((kernel.missing >= 0) & ~kernel.fine).tolist()
        none = torch.zeros(b, dtype=torch.long, device=dev)
        # with levels, the step's tokens so far and where each variable's first column is
        levels = kernel.levels
        step_tokens = torch.zeros(b, d, dtype=torch.long, device=dev)
        starts = (kernel.first == torch.arange(d, device=dev)).tolist()
    for t in range(steps):
        s, h = model.gru((x + model.position.weight[t] + c)[:, None], h)
        if kernel is not None:
            prev = F.embedding(last.T + previous_at[:, None], previous_table) * has.T[..., None]
            before = torch.zeros_like(prev).index_add_(0, first, prev)[first]
            before += kernel.age.weight[age.T] + kernel.seen.weight[count.T.long().clamp(max=SEEN)]
            level = total.new_zeros(b, d) if levels else None  # set at each variable
            anchors = kernel.anchors(last, total / count.clamp(min=1), level)  # (B, D, 4|5)
        base = before + (s[:, 0] + c) + model.column_pos[:, None]  # (D, B, W)
        earlier, drawn = None, []  # (B, W): the step's columns so far; their tokens
        for j in range(d):
            z = base[j] if earlier is None else base[j] + earlier
            z = _mlp(z, model.blocks, model.norm)
            logits = F.linear(z, *heads[j])
            if kernel is not None:
                logits, coef = logits[:, : model.vocab[j]], logits[:, model.vocab[j] :, None]
                now = drawn[coarse[j]] if coarse[j] < j else none  # the step's coarse token
                at = slice(j, j + 1)
                if levels and starts[j]:  # its level reads the variables drawn before it
                    anchors[:, :, 4] = kernel.level_of(static, last, has, step_tokens)
                kern = kernel.kernel(coef.mT, now[:, None], anchors[:, at], has[:, at], at)
                kern = kern[:, 0, : model.vocab[j]]
                if shifted[j]:  # else a constant shift: the same softmax
                    logits = kernel.combine(logits[:, None], kern[:, None], at)[:, 0]
                else:
                    logits = logits + kern
                logits = logits / temperature
            tok = pick(logits, u[t, j])
            if kernel is not None and levels:
                step_tokens[:, j] = tok
            drawn.append(tok)
            e = F.embedding(tok, tables[j])
            earlier = e if earlier is None else earlier + e
        out[:, t] = torch.stack(drawn, 1)
        x = F.embedding(out[:, t] + step_at, step_table).sum(1)
        if kernel is not None:
            observed = out[:, t, first] != kernel.missing  # (B, D)
            last = torch.where(observed, out[:, t], last)
            age = torch.where(has, (age + 1).clamp(max=AGES), AGES + 1)
            age = torch.where(observed, 1, age)
            has |= observed
            total += kernel.place(out[:, t]) * observed
            count += observed
            continue
        prev = F.embedding(out[:, t].T + previous_at[:, None], previous_table)  # (D, B, W)
        before = torch.zeros_like(prev).index_add_(0, first, prev)[first]
    return out * (torch.arange(model.max_length, device=out.device) < lengths[:, None])[..., None]
