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
  and every step knows how long the stay will be; or, with `ends` (`HealthGymConfig.end =
  "drawn"`, what the simulator needs), unknown to the steps: each step first draws whether
  the stay ends there, given the history and treatments so far, and its columns read that
  (an outcome row knows it is the last), so death and discharge respond to treatment.

Trained by maximum likelihood (cross-entropy), so it has no adversary, no mode collapse, and
a validation loss to stop on.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .kernel import LastValue
from .layers import Block, Embeddings, TokenHead, column_logits, column_nll, joined_heads


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
        scales: list[tuple[int, int, int, bool]] | None = None,
        levels: list[bool] | None = None,
        ends: bool = False,
        actions: int = 0,
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.vocab, self.max_length = [len(p) for p in positions], max_length
        # with `actions` (the step's last token columns are treatments), the previous step's
        # treatments reach every column of the next step (and its end) directly, not only
        # through the GRU's summary of the step
        self.actions = actions
        self.treated = Embeddings(positions[len(positions) - actions :], width) if actions else None
        # with `ends`, the steps do not read the length (the statics' last token): they draw it
        self.ends = ends
        read = static_positions[:-1] if ends else static_positions
        if ends:
            self.end_pos = nn.Parameter(torch.zeros(width))  # the end's place in the step
            self.end_head = nn.Linear(width, 2)  # does the stay end at this step?
            self.end_in = nn.Embedding(2, width)  # what the step's columns read of it
        # with `skip` (and `ends`), the previous step's tokens reach the step's end and its
        # columns directly, not only through the GRU's summary: hazards and outcome flags that
        # turn sharply on the last state (issue 33)
        self.skip = Embeddings(positions, width) if skip and ends else None
        if self.skip is not None:  # starts as the model without it, and learns what it adds
            for p in self.skip.parameters():
                nn.init.zeros_(p)
        # same[j, i] = 1 where tokens i and j belong to one variable (a real's coarse + fine)
        g = torch.tensor(groups)
        self.register_buffer("same", (g[:, None] == g[None, :]).float(), persistent=False)
        self.context = Embeddings(read, width) if read else None
        self.step_in = Embeddings(positions, width)  # a step's summary for the GRU
        self.position = nn.Embedding(max_length, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.column_in = Embeddings(positions, width)  # earlier columns of the same step
        self.previous = Embeddings(positions, width)  # the variable's tokens one step earlier
        self.column_pos = nn.Parameter(torch.zeros(len(positions), width))
        self.blocks = nn.Sequential(Block(width, dropout), Block(width, dropout))
        self.norm = nn.LayerNorm(width)
        self.heads = nn.ModuleList(TokenHead(p, width) for p in positions)
        # `scales` (Tokenizer.dynamic_scales): each column reads its variable's last observed
        # value instead of the previous step's tokens, and its head adds a kernel (LastValue),
        # with `levels` also around the variable's level given the statics; None: as before
        # issue 15 (`HealthGymConfig.last_value`)
        sizes = [len(p) for p in static_positions]
        self.last = (
            None if scales is None else LastValue(scales, groups, self.vocab, width, sizes, levels)
        )

    def static_context(self, static: torch.Tensor, n: int) -> torch.Tensor:  # -> (B, W)
        if self.context is None:
            return self.position.weight.new_zeros(n, self.position.embedding_dim)
        return self.context(static[:, :-1] if self.ends else static)

    @property
    def has_direct(self) -> bool:
        """Whether a step's tokens also reach the next step directly (`direct`)."""
        return self.treated is not None or self.skip is not None

    def direct(self, tokens: torch.Tensor) -> torch.Tensor | float:
        """(..., D) tokens of a step -> (..., W) what they give the next step directly: the
        treatments' embedding (`actions`) and, with `skip`, the tokens'; 0. with neither."""
        out: torch.Tensor | float = 0.0
        if self.treated is not None:
            out = self.treated(tokens[..., len(self.vocab) - self.actions :])
        if self.skip is not None:
            out = out + self.skip(tokens)
        return out

    def treatments(self, dynamic: torch.Tensor) -> torch.Tensor | float:
        """(B, T, W): what each step's previous step gives it directly (`direct`; 0 at the
        first step; 0. without a direct path)."""
        if not self.has_direct:
            return 0.0
        x = self.direct(dynamic)
        assert isinstance(x, torch.Tensor)
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)

    def end_logits(self, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """With `ends`: logits (..., 2) of 'the stay ends at this step' from the recurrent
        state s (..., W) (the history and treatments before the step) and the context c."""
        return self.end_head(self.norm(self.blocks(s + c + self.end_pos)))

    def forward(
        self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> Any:
        """static (B, S), dynamic (B, T, D) tokens -> logits [(B, T, v_j)]; with lengths (B,),
        each patient's NLL (B,) instead (`sequence_nll`: the heads in one product, and one
        call of the module, as DistributedDataParallel needs)."""
        if lengths is None:
            logits = self.logits(static, dynamic)  # (B, T, D, V)
            return [logits[:, :, j, :v] for j, v in enumerate(self.vocab)]
        steps = torch.arange(dynamic.shape[1], device=dynamic.device)
        valid = steps < lengths[:, None]  # (B, T)
        if not self.ends:
            return (column_nll(self.logits(static, dynamic), dynamic) * valid).sum(1)
        end = (steps == lengths[:, None] - 1).long()  # (B, T): the stay's last step
        logits, s = self.logits(static, dynamic, end, with_state=True)
        c = self.static_context(static, len(static))[:, None] + self.treatments(dynamic)
        end_nll = F.cross_entropy(self.end_logits(s, c).mT, end, reduction="none")
        return ((column_nll(logits, dynamic) + end_nll) * valid).sum(1)

    def logits(
        self,
        static: torch.Tensor,
        dynamic: torch.Tensor,
        end: torch.Tensor | None = None,
        with_state: bool = False,
    ) -> Any:
        """static (B, S), dynamic (B, T, D) tokens -> logits (B, T, D, V) of every column
        (padded slots -inf): the heads' and, with `last`, its kernel's; with `ends`, `end`
        (B, T) marks each stay's last step (None: none is); `with_state`: also the recurrent
        states (B, T, W) that the end's logits read."""
        history = None if self.last is None else self.last.history(dynamic)
        z, s = self.features(static, dynamic, history, end)
        out = column_logits(self.heads, z)
        if self.last is not None:
            out = self.last.logits(out, z, dynamic, history, static)
        return (out, s) if with_state else out

    def features(
        self,
        static: torch.Tensor,
        dynamic: torch.Tensor,
        history: tuple | None = None,
        end: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """static (B, S), dynamic (B, T, D) tokens -> what each column's head reads (B, T, D,
        W) and the recurrent states (B, T, W): `forward` without the heads (`column_logits`
        applies them all at once); `history`: `last.history(dynamic)` where the caller has it;
        `end` (B, T): with `ends`, each stay's last step (None: none is)."""
        b, t, _ = dynamic.shape
        c = self.static_context(static, b)  # (B, W)
        x = self.step_in(dynamic)  # (B, T, W)
        x = torch.cat([x.new_zeros(b, 1, x.shape[-1]), x[:, :-1]], dim=1)  # (B, T, W): 0 = start
        x = x + self.position.weight[:t] + c[:, None]
        s, _ = self.gru(x)  # (B, T, W): s_t has read steps < t
        e = self.column_in.stack(dynamic)  # (B, T, D, W)
        earlier = e.cumsum(dim=2) - e  # (B, T, D, W): columns < j of the same step
        if self.last is None:
            before = self.recall(dynamic[:, :-1])  # (B, T-1, D, W)
            before = torch.cat([before.new_zeros(b, 1, *before.shape[2:]), before], dim=1)
        else:  # each variable's last observed tokens and the steps since
            history = history if history is not None else self.last.history(dynamic)
            before = self.last.context(self.recall(history[0]), history)
        z = earlier + before  # contiguous; in-place adds keep it so (the GRU's s is not, and
        z += s[:, :t, None]  # LayerNorm would copy a non-contiguous z in every pass)
        z += self.column_pos + c[:, None, None]
        if self.has_direct:
            z += self.treatments(dynamic)[:, :, None]
        if self.ends:  # the step's columns know whether it is the stay's last
            z += self.end_in.weight[0 if end is None else end][..., None, :]
        return self.norm(self.blocks(z)), s  # (B, T, D, W), (B, T, W)

    def last_step(
        self, static: torch.Tensor, dynamic: torch.Tensor, end: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The features (B, D, W) of the last step of dynamic (B, T, D) alone, as `forward`
        computes them (the simulator draws one step at a time: `last_logits`); `end` (B,):
        with `ends`, whether that step ends the stay (None: it does not)."""
        b, t, _ = dynamic.shape
        c = self.static_context(static, b)  # (B, W)
        x = self.step_in(dynamic[:, :-1])  # (B, T-1, W): the steps read by the GRU
        x = torch.cat([x.new_zeros(b, 1, x.shape[-1]), x], dim=1)  # (B, T, W)
        s, _ = self.gru(x + self.position.weight[:t] + c[:, None])  # (B, T, W)
        e = self.column_in.stack(dynamic[:, -1])  # (B, D, W)
        if self.last is None:
            before = self.recall(dynamic[:, -2]) if t > 1 else torch.zeros_like(e)  # (B, D, W)
        else:
            history = tuple(h[:, -1] for h in self.last.history(dynamic))
            before = self.last.context(self.recall(history[0]), history)
        z = s[:, -1, None] + (e.cumsum(dim=1) - e) + before + self.column_pos + c[:, None]
        if self.has_direct:
            z = z + self.treatments(dynamic)[:, -1, None]
        if self.ends:
            z = z + self.end_in.weight[0 if end is None else end][..., None, :]
        return self.norm(self.blocks(z))  # (B, D, W)

    def last_logits(
        self, static: torch.Tensor, dynamic: torch.Tensor, end: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The logits (B, D, V) of the last step of dynamic (B, T, D), as `logits` computes
        them (padded slots -inf): column j's are right once the step's columns < j are set."""
        z = self.last_step(static, dynamic, end)
        out = column_logits(self.heads, z)
        if self.last is None:
            return out
        history = tuple(h[:, -1:] for h in self.last.history(dynamic))
        return self.last.logits(out[:, None], z[:, None], dynamic[:, -1:], history, static)[:, 0]

    def recall(self, previous: torch.Tensor) -> torch.Tensor:
        """(..., D) tokens of a step -> (..., D, W): for each column, its variable's tokens."""
        embedded = self.previous.stack(previous)
        first = self.same.argmax(1)  # (D,): the first token column of each column's variable
        return torch.zeros_like(embedded).index_add_(-2, first, embedded).index_select(-2, first)


class PatientModel(nn.Module):
    """Statics (any order) + steps + length. `*_positions`: per token column, each token's
    place on its variable's scale (`Tokenizer.static_positions`); `groups`: the variable of
    each dynamic token column; `scales` (`Tokenizer.dynamic_scales`) turns `LastValue` on;
    `ends`: the steps draw where the stay ends instead of reading its length; `actions`: the
    number of treatment token columns (a step's last), which then reach the next step
    directly."""

    def __init__(
        self,
        static_positions: list[list[float]],
        dynamic_positions: list[list[float]],
        groups: list[int],
        max_length: int,
        width: int = 128,
        dropout: float = 0.1,
        scales: list[tuple[int, int, int, bool]] | None = None,
        levels: list[bool] | None = None,
        ends: bool = False,
        actions: int = 0,
        skip: bool = False,
    ) -> None:
        super().__init__()
        self.statics = StaticModel(static_positions, width, dropout)
        self.sequence = SequenceModel(
            static_positions,
            dynamic_positions,
            groups,
            max_length,
            width,
            dropout,
            scales,
            levels,
            ends,
            actions,
            skip,
        )


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
