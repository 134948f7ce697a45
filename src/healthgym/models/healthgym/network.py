"""The default model's network: an autoregressive likelihood model over patient tokens.

A patient is its static tokens s_1..s_S (the last one: the number of steps), then per step
t the dynamic tokens x_t1..x_tD. The joint factorises as

    p(s) * prod_t prod_j p(x_tj | x_t,<j, history, s)

- statics: any-order autoregressive (every order is trained, by masking a random subset of
  the columns), so `sample(conditions=...)` fixes any subset and draws the rest from their
  conditional, without rejection;
- history: a GRU over steps reads each step's tokens (summed embeddings), the static
  context and the step position;
- within a step: column j reads the GRU state plus the summed embeddings of the step's
  earlier columns (an exclusive cumulative sum, so teacher forcing is one pass), through a
  residual MLP, into its own softmax head;
- length: a static token, so it is drawn with (and can be conditioned on like) the statics,
  and every step knows how long the stay will be.

Trained by maximum likelihood (cross-entropy), so it has no adversary, no mode collapse, and
a validation loss to stop on.
"""

from __future__ import annotations

from typing import Any

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


class StaticModel(nn.Module):
    """Any-order autoregressive model of the S static tokens of a patient."""

    def __init__(self, positions: list[list[float]], width: int, dropout: float) -> None:
        super().__init__()
        self.vocab = [len(p) for p in positions]
        self.embed = Embeddings(positions, width, extra=1)  # token v_j of column j = "unknown"
        self.blocks = nn.Sequential(Block(width, dropout), Block(width, dropout))
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(TokenHead(p, width) for p in positions)

    def unknown(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, S) tokens with every column unknown."""
        return torch.tensor(self.vocab, device=device).expand(n, -1).clone()

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """tokens (B, S), unknown columns holding v_j -> logits per column [(B, v_j)]."""
        h = self.features(tokens)
        return [head(h) for head in self.heads]

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, S) -> what every head reads (B, W)."""
        return self.norm(self.blocks(self.embed(tokens)))


class SequenceModel(nn.Module):
    """Dynamic tokens and length given the statics."""

    def __init__(
        self,
        static_positions: list[list[float]],
        positions: list[list[float]],
        groups: list[int],
        max_length: int,
        width: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.vocab, self.max_length = [len(p) for p in positions], max_length
        # same[j, i] = 1 where tokens i and j belong to one variable (a real's coarse + fine)
        g = torch.tensor(groups)
        self.register_buffer("same", (g[:, None] == g[None, :]).float(), persistent=False)
        self.context = Embeddings(static_positions, width) if static_positions else None
        self.step_in = Embeddings(positions, width)  # a step's summary for the GRU
        self.position = nn.Embedding(max_length, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.column_in = Embeddings(positions, width)  # earlier columns of the same step
        self.previous = Embeddings(positions, width)  # the variable's tokens one step earlier
        self.column_pos = nn.Parameter(torch.zeros(len(positions), width))
        self.blocks = nn.Sequential(Block(width, dropout), Block(width, dropout))
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(TokenHead(p, width) for p in positions)

    def static_context(self, static: torch.Tensor, n: int) -> torch.Tensor:  # -> (B, W)
        if self.context is None:
            return self.position.weight.new_zeros(n, self.position.embedding_dim)
        return self.context(static)

    def forward(
        self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> Any:
        """static (B, S), dynamic (B, T, D) tokens -> logits [(B, T, v_j)]; with lengths (B,),
        each patient's NLL (B,) instead (`sequence_nll`: the heads in one product, and one
        call of the module, as DistributedDataParallel needs)."""
        z = self.features(static, dynamic)
        if lengths is None:
            return [head(z[:, :, j]) for j, head in enumerate(self.heads)]
        valid = torch.arange(dynamic.shape[1], device=dynamic.device) < lengths[:, None]
        return (column_nll(column_logits(self.heads, z), dynamic) * valid).sum(1)

    def features(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """static (B, S), dynamic (B, T, D) tokens -> what each column's head reads (B, T, D,
        W): `forward` without the heads (`column_logits` applies them all at once)."""
        b, t, _ = dynamic.shape
        c = self.static_context(static, b)  # (B, W)
        x = self.step_in(dynamic)  # (B, T, W)
        x = torch.cat([x.new_zeros(b, 1, x.shape[-1]), x[:, :-1]], dim=1)  # (B, T, W): 0 = start
        x = x + self.position.weight[:t] + c[:, None]
        s, _ = self.gru(x)  # (B, T, W): s_t has read steps < t
        e = self.column_in.stack(dynamic)  # (B, T, D, W)
        earlier = e.cumsum(dim=2) - e  # (B, T, D, W): columns < j of the same step
        before = self.recall(dynamic[:, :-1])  # (B, T-1, D, W)
        before = torch.cat([before.new_zeros(b, 1, *before.shape[2:]), before], dim=1)
        z = earlier + before  # contiguous; in-place adds keep it so (the GRU's s is not, and
        z += s[:, :t, None]  # LayerNorm would copy a non-contiguous z in every pass)
        z += self.column_pos + c[:, None, None]
        return self.norm(self.blocks(z))  # (B, T, D, W)

    def last_step(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """The features (B, D, W) of the last step of dynamic (B, T, D) alone, as `forward`
        computes them (the simulator draws one step at a time: `heads[j]` of column j)."""
        b, t, _ = dynamic.shape
        c = self.static_context(static, b)  # (B, W)
        x = self.step_in(dynamic[:, :-1])  # (B, T-1, W): the steps read by the GRU
        x = torch.cat([x.new_zeros(b, 1, x.shape[-1]), x], dim=1)  # (B, T, W)
        s, _ = self.gru(x + self.position.weight[:t] + c[:, None])  # (B, T, W)
        e = self.column_in.stack(dynamic[:, -1])  # (B, D, W)
        before = self.recall(dynamic[:, -2]) if t > 1 else torch.zeros_like(e)  # (B, D, W)
        z = s[:, -1, None] + (e.cumsum(dim=1) - e) + before + self.column_pos + c[:, None]
        return self.norm(self.blocks(z))  # (B, D, W)

    def recall(self, previous: torch.Tensor) -> torch.Tensor:
        """(..., D) tokens of a step -> (..., D, W): for each column, its variable's tokens."""
        embedded = self.previous.stack(previous)
        first = self.same.argmax(1)  # (D,): the first token column of each column's variable
        return torch.zeros_like(embedded).index_add_(-2, first, embedded).index_select(-2, first)


class PatientModel(nn.Module):
    """Statics (any order) + steps + length. `*_positions`: per token column, each token's
    place on its variable's scale (`Tokenizer.static_positions`); `groups`: the variable of
    each dynamic token column."""

    def __init__(
        self,
        static_positions: list[list[float]],
        dynamic_positions: list[list[float]],
        groups: list[int],
        max_length: int,
        width: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.statics = StaticModel(static_positions, width, dropout)
        self.sequence = SequenceModel(
            static_positions, dynamic_positions, groups, max_length, width, dropout
        )


def start_at_marginals(heads: nn.ModuleList, tokens: torch.Tensor) -> None:
    """Set each head's bias to the log frequency of its tokens in `tokens` (rows, columns), so
    training starts from the right marginals instead of spending its first steps on them."""
    with torch.no_grad():
        for j, head in enumerate(heads):
            counts = torch.bincount(tokens[:, j], minlength=head.free.out_features).double()
            head.free.bias.copy_(torch.log((counts + 0.5) / (counts.sum() + 0.5 * len(counts))))


# ---- likelihood ---------------------------------------------------------------------------
def static_nll(model: StaticModel, static: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(B,) order-agnostic NLL estimate of the statics: a random number k of columns are
    known, the rest predicted, weighted S/(S-k) (unbiased for the average order). Half the
    rows take the first k columns in schema order (the order `draw_statics` samples in
    without conditions), half a random set of k (any order, for conditional sampling)."""
    b, n = static.shape
    known_count = torch.randint(0, n, (b, 1), generator=rng, device=static.device)
    rank = torch.rand(b, n, generator=rng, device=static.device).argsort(1).argsort(1)
    in_order = torch.rand(b, 1, generator=rng, device=static.device) < 0.5
    rank = torch.where(in_order, torch.arange(n, device=static.device), rank)
    known = rank < known_count  # (B, S)
    inputs = torch.where(known, static, model.unknown(b, static.device))
    h = model.features(inputs)  # (B, W): every head reads it
    logits = F.linear(h, *joined_heads(model.heads))  # (B, sum of v_j)
    ce = torch.stack([F.cross_entropy(lg, static[:, j], reduction="none")
                      for j, lg in enumerate(logits.split(model.vocab, 1))], 1)  # fmt: skip
    return (ce * ~known).sum(1) * n / (n - known_count.squeeze(1))


def sequence_nll(
    model: SequenceModel, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(B,) NLL of each patient's steps given the statics and length (nats), padding ignored."""
    return model(static, dynamic, lengths)


# ---- sampling -----------------------------------------------------------------------------
# The sampler reads the same parameters in the form sampling needs, computed once per call:
# each embedding module as one table per column, every column's table stacked into one (so a
# step's tokens are one lookup), and each head as one matrix (free + features @ place, divided
# by the temperature). A token is drawn by inverse CDF from one uniform, and every uniform of
# a batch is drawn in one call.
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
    """Steps (B, T, D) given static tokens (B, S) and lengths (B,); zeros past each length."""
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
    for t in range(steps):
        s, h = model.gru((x + model.position.weight[t] + c)[:, None], h)
        base = before + (s[:, 0] + c) + model.column_pos[:, None]  # (D, B, W)
        earlier, drawn = None, []  # (B, W): the step's columns so far; their tokens
        for j in range(d):
            z = base[j] if earlier is None else base[j] + earlier
            tok = pick(F.linear(_mlp(z, model.blocks, model.norm), *heads[j]), u[t, j])
            drawn.append(tok)
            e = F.embedding(tok, tables[j])
            earlier = e if earlier is None else earlier + e
        out[:, t] = torch.stack(drawn, 1)
        x = F.embedding(out[:, t] + step_at, step_table).sum(1)
        prev = F.embedding(out[:, t].T + previous_at[:, None], previous_table)  # (D, B, W)
        before = torch.zeros_like(prev).index_add_(0, first, prev)[first]
    return out * (torch.arange(model.max_length, device=out.device) < lengths[:, None])[..., None]
