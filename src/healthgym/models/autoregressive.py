"""The default model's network: an autoregressive likelihood model over patient tokens.

A patient is its static tokens s_1..s_S, then per step t the dynamic tokens x_t1..x_tD, then
"stop" or "go on". The joint factorises as

    p(s) * prod_t [ prod_j p(x_tj | x_t,<j, history, s) ] * p(stop after t | x_<=t, s)

- statics: any-order autoregressive (every order is trained, by masking a random subset of
  the columns), so `sample(conditions=...)` fixes any subset and draws the rest from their
  conditional, without rejection;
- history: a GRU over steps reads each step's tokens (summed embeddings), the static
  context and the step position;
- within a step: column j reads the GRU state plus the summed embeddings of the step's
  earlier columns (an exclusive cumulative sum, so teacher forcing is one pass), through a
  residual MLP, into its own softmax head;
- length: a stop head on the state after each step.

Trained by maximum likelihood (cross-entropy), so it has no adversary, no mode collapse, and
a validation loss to stop on.
"""

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
        return x + self.drop(self.down(F.gelu(self.up(self.norm(x)))))


class Embeddings(nn.Module):
    """One embedding table per token column; a row's embedding is their sum (or stack)."""

    def __init__(self, vocab: list[int], width: int, extra: int = 0) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v + extra, width) for v in vocab)

    def stack(self, tokens: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C, W)
        return torch.stack([t(tokens[..., j]) for j, t in enumerate(self.tables)], dim=-2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., W)
        return self.stack(tokens).sum(dim=-2)


class StaticModel(nn.Module):
    """Any-order autoregressive model of the S static tokens of a patient."""

    def __init__(self, vocab: list[int], width: int, dropout: float) -> None:
        super().__init__()
        self.vocab = vocab
        self.embed = Embeddings(vocab, width, extra=1)  # token v_j of column j = "unknown"
        self.blocks = nn.Sequential(Block(width, dropout), Block(width, dropout))
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(nn.Linear(width, v) for v in vocab)

    def unknown(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, S) tokens with every column unknown."""
        return torch.tensor(self.vocab, device=device).expand(n, -1).clone()

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """tokens (B, S), unknown columns holding v_j -> logits per column [(B, v_j)]."""
        h = self.norm(self.blocks(self.embed(tokens)))  # (B, W)
        return [head(h) for head in self.heads]


class SequenceModel(nn.Module):
    """Dynamic tokens and length given the statics."""

    def __init__(
        self, static_vocab: list[int], vocab: list[int], max_length: int, width: int, dropout: float
    ) -> None:
        super().__init__()
        self.vocab, self.max_length = vocab, max_length
        self.context = Embeddings(static_vocab, width) if static_vocab else None
        self.step_in = Embeddings(vocab, width)  # a step's summary for the GRU
        self.position = nn.Embedding(max_length + 1, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.column_in = Embeddings(vocab, width)  # earlier columns of the same step
        self.column_pos = nn.Parameter(torch.zeros(len(vocab), width))
        self.blocks = nn.Sequential(Block(width, dropout), Block(width, dropout))
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(nn.Linear(width, v) for v in vocab)
        self.stop = nn.Linear(width, 1)

    def static_context(self, static: torch.Tensor, n: int) -> torch.Tensor:  # -> (B, W)
        if self.context is None:
            return self.position.weight.new_zeros(n, self.position.embedding_dim)
        return self.context(static)

    def forward(
        self, static: torch.Tensor, dynamic: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """static (B, S), dynamic (B, T, D) tokens -> logits [(B, T, v_j)], stop logits (B, T).

        Stop logit t: "the stay ends after step t", read from the state after step t.
        """
        b, t, _ = dynamic.shape
        c = self.static_context(static, b)  # (B, W)
        x = self.step_in(dynamic)  # (B, T, W)
        x = torch.cat([x.new_zeros(b, 1, x.shape[-1]), x], dim=1)  # (B, T+1, W), step 0 = start
        x = x + self.position.weight[: t + 1] + c[:, None]
        s, _ = self.gru(x)  # (B, T+1, W): s_t has read steps < t
        e = self.column_in.stack(dynamic)  # (B, T, D, W)
        earlier = e.cumsum(dim=2) - e  # (B, T, D, W): columns < j of the same step
        z = s[:, :t, None] + earlier + self.column_pos + c[:, None, None]
        z = self.norm(self.blocks(z))  # (B, T, D, W)
        logits = [head(z[:, :, j]) for j, head in enumerate(self.heads)]
        return logits, self.stop(s[:, 1:]).squeeze(-1)

    def column_logits(self, j: int, state: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
        """Sampling: logits (B, v_j) of column j from the step state and the earlier columns."""
        z = self.norm(self.blocks(state + earlier + self.column_pos[j]))
        return self.heads[j](z)


class PatientModel(nn.Module):
    """Statics (any order) + steps + length."""

    def __init__(
        self,
        static_vocab: list[int],
        dynamic_vocab: list[int],
        max_length: int,
        width: int = 128,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.statics = StaticModel(static_vocab, width, dropout) if static_vocab else None
        self.sequence = SequenceModel(static_vocab, dynamic_vocab, max_length, width, dropout)


# ---- likelihood ---------------------------------------------------------------------------
def static_nll(model: StaticModel, static: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(B,) order-agnostic NLL estimate of the statics: a random number k of random columns
    are known, the rest predicted, weighted S/(S-k) (unbiased for the average order)."""
    b, n = static.shape
    known_count = torch.randint(0, n, (b, 1), generator=rng, device=static.device)
    rank = torch.rand(b, n, generator=rng, device=static.device).argsort(1).argsort(1)
    known = rank < known_count  # (B, S)
    inputs = torch.where(known, static, model.unknown(b, static.device))
    logits = model(inputs)
    ce = torch.stack(
        [F.cross_entropy(lg, static[:, j], reduction="none") for j, lg in enumerate(logits)], 1
    )  # (B, S)
    return (ce * ~known).sum(1) * n / (n - known_count.squeeze(1))


def sequence_nll(
    model: SequenceModel, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(B,) NLL of each patient's steps and length (nats), padding ignored."""
    b, t, _ = dynamic.shape
    logits, stop = model(static, dynamic)
    steps = torch.arange(t, device=dynamic.device)
    valid = steps < lengths[:, None]  # (B, T)
    ce = sum(
        F.cross_entropy(lg.reshape(b * t, -1), dynamic[:, :, j].reshape(-1), reduction="none")
        for j, lg in enumerate(logits)
    ).view(b, t)
    ends = (steps == lengths[:, None] - 1).float()
    decided = valid & (steps < model.max_length - 1)  # the longest stay ends by itself
    bce = F.binary_cross_entropy_with_logits(stop, ends, reduction="none")
    return (ce * valid).sum(1) + (bce * decided).sum(1)


# ---- sampling -----------------------------------------------------------------------------
def _draw(logits: torch.Tensor, rng: torch.Generator, temperature: float) -> torch.Tensor:
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=rng).squeeze(1)


@torch.no_grad()
def draw_statics(
    model: StaticModel, tokens: torch.Tensor, rng: torch.Generator, temperature: float = 1.0
) -> torch.Tensor:
    """Fill the unknown columns (holding v_j) of tokens (B, S), one column at a time."""
    tokens = tokens.clone()
    unknown = model.unknown(len(tokens), tokens.device)
    for j in range(tokens.shape[1]):
        todo = tokens[:, j] == unknown[:, j]
        if todo.any():
            drawn = _draw(model(tokens)[j], rng, temperature)
            tokens[:, j] = torch.where(todo, drawn, tokens[:, j])
    return tokens


@torch.no_grad()
def draw_steps(
    model: SequenceModel,
    static: torch.Tensor,
    rng: torch.Generator,
    length: int | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps (B, T, D) and lengths (B,) given static tokens (B, S); `length` fixes the length."""
    b, steps, d = static.shape[0], model.max_length, len(model.vocab)
    c = model.static_context(static, b)  # (B, W)
    out = torch.zeros(b, steps, d, dtype=torch.long, device=static.device)
    lengths = torch.full((b,), steps if length is None else length, device=static.device)
    alive = torch.ones(b, dtype=torch.bool, device=static.device)
    x, h = torch.zeros_like(c), None
    for t in range(steps if length is None else length):
        s, h = model.gru((x + model.position.weight[t] + c)[:, None], h)
        s = s[:, 0]  # (B, W): has read steps < t
        if t > 0 and length is None:  # does the stay end after step t-1?
            ends = torch.bernoulli(torch.sigmoid(model.stop(s)).squeeze(1), generator=rng).bool()
            lengths = torch.where(alive & ends, t, lengths)
            alive &= ~ends
            if not alive.any():
                break
        earlier = torch.zeros_like(s)
        for j in range(d):
            tok = _draw(model.column_logits(j, s + c, earlier), rng, temperature)
            out[:, t, j] = tok
            earlier = earlier + model.column_in.tables[j](tok)
        x = model.step_in(out[:, t])
    return out, lengths
