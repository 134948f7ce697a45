"""Drawing patients from a trained `PatientModel`.

The sampler reads the same parameters in the form sampling needs, computed once per call:
each embedding module as one table per column, every column's table stacked into one (so a
step's tokens are one lookup), and each head as one matrix (free + features @ place, divided
by the temperature). A token is drawn by inverse CDF from one uniform, and every uniform of
a batch is drawn in one call.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .kernel import AGES, SEEN
from .layers import Embeddings
from .network import SequenceModel, StaticModel
from .row_mask import RowMask
from .step_kernel import StepKernel


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


class Residual:
    """`norm(blocks(x))` in evaluation mode (no dropout) from the weights alone, read once:
    no module calls or attribute look-ups at each of a step's columns."""

    def __init__(self, blocks: nn.Sequential, norm: nn.LayerNorm) -> None:
        self.blocks = [
            (_norm_of(b.norm), b.up.weight, b.up.bias, b.down.weight, b.down.bias) for b in blocks
        ]
        self.norm = _norm_of(norm)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for norm, up, up_bias, down, down_bias in self.blocks:
            x = x + F.linear(
                F.gelu(F.linear(torch.layer_norm(x, *norm), up, up_bias)), down, down_bias
            )
        return torch.layer_norm(x, *self.norm)


def _norm_of(norm: nn.LayerNorm) -> tuple:
    return norm.normalized_shape, norm.weight, norm.bias, norm.eps


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
    mlp = Residual(model.blocks, model.norm)
    for j in range(n):
        todo = tokens[:, j] == unknown[j]
        if todo.any():
            h = mlp(F.embedding(tokens + offsets, table).sum(1))
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
    mask: RowMask | None = None,
) -> torch.Tensor:
    """Steps (B, T, D) given static tokens (B, S) and lengths (B,); zeros past each length;
    `mask`: the schema's rows block kept (`row_mask`)."""
    b, steps, d = static.shape[0], int(lengths.max()), len(model.vocab)
    u = torch.rand(steps, d, b, generator=rng, device=static.device).double()
    stepper = StepDrawer(model, static, temperature, mask=mask, lengths=lengths)
    out = torch.zeros(b, model.max_length, d, dtype=torch.long, device=static.device)
    for t in range(steps):
        out[:, t] = stepper.draw(u[t])
        stepper.commit(out[:, t])
    return out * (torch.arange(model.max_length, device=out.device) < lengths[:, None])[..., None]


@torch.no_grad()
def draw_stays(
    model: SequenceModel,
    static: torch.Tensor,
    rng: torch.Generator,
    temperature: float = 1.0,
    mask: RowMask | None = None,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """With `model.ends`: steps (B, T, D) given static tokens (B, S), each stay running until
    its steps draw its end (at the longest stay trained on, at the latest), and the stays'
    lengths (B,); zeros past each. `lengths`: stays of these lengths instead (the end forced)."""
    b, d, longest = static.shape[0], len(model.vocab), model.max_length
    u = torch.rand(longest, d + 1, b, generator=rng, device=static.device).double()
    stepper = StepDrawer(model, static, temperature, mask=mask, lengths=lengths)
    out = torch.zeros(b, longest, d, dtype=torch.long, device=static.device)
    drawn = torch.full((b,), longest, dtype=torch.long, device=static.device)
    running = torch.ones(b, dtype=torch.bool, device=static.device)
    for t in range(longest):
        out[:, t] = stepper.draw(u[t])
        stepper.commit(out[:, t])
        drawn = torch.where(running & stepper.ended, t + 1, drawn)
        running &= ~stepper.ended
        if not running.any():
            break
    return out * (torch.arange(longest, device=out.device) < drawn[:, None])[..., None], drawn


class StepDrawer:
    """Patients' steps drawn one at a time, the recurrent state carried from step to step (a
    step costs the same whatever came before): `draw` the next step's token columns (all, or
    the first `stop`: the simulator sets the treatments itself), then `commit` the step's
    tokens. Patients may be at different steps: `restart` begins new stays in some rows (the
    simulator's auto-reset). With `model.last`, each column's variable's last observed tokens,
    whether there is one, the steps since and the sum and count of its observed places are
    kept, as `LastValue.history` computes them from the steps. `mask` keeps the schema's rows
    block (`row_mask`; its last-only items need each patient's `lengths`). With `model.ends`,
    a step first draws whether it ends the stay (`ended`; from the uniforms' last row), never
    before step `shortest` - 1, always at the longest stay trained on, and where `lengths`
    are given, exactly at each patient's."""

    @torch.no_grad()
    def __init__(
        self,
        model: SequenceModel,
        static: torch.Tensor,
        temperature: float,
        mask: RowMask | None = None,
        lengths: torch.Tensor | None = None,
        shortest: int = 1,
    ) -> None:
        b, d = static.shape[0], len(model.vocab)
        dev = static.device
        self.model, self.static, self.temperature = model, static.clone(), temperature
        self.mask, self.lengths, self.shortest = mask, lengths, shortest
        self.ended = torch.zeros(b, dtype=torch.bool, device=dev)  # (B,) the step ends the stay
        self.t = torch.zeros(b, dtype=torch.long, device=dev)  # (B,) each patient's step
        self.c = model.static_context(static, b)  # (B, W)
        self.step_table, self.step_at = joined_tables(model.step_in)
        self.previous_table, self.previous_at = joined_tables(model.previous)
        self.heads = head_matrices(model.heads, temperature)
        self.mlp = Residual(model.blocks, model.norm)
        self.first = model.same.argmax(1)  # (D,): the first token column of each variable
        self.tables = model.column_in.joined().split(model.vocab)  # column j's rows (views)
        self.x, self.h = torch.zeros_like(self.c), None
        self.acted = torch.zeros_like(self.c)  # (B, W) what reaches the next step directly
        self.before = self.c.new_zeros(d, b, self.c.shape[1])  # (D, B, W): one step back
        self.none = torch.zeros(b, dtype=torch.long, device=dev)
        self.steps: StepKernel | None = None
        kernel = self.kernel = model.last
        if kernel is None:
            return
        self.last = torch.zeros(b, d, dtype=torch.long, device=dev)  # (B, D) last observed
        self.has = torch.zeros(b, d, dtype=torch.bool, device=dev)
        self.age = torch.zeros(b, d, dtype=torch.long, device=dev)
        self.total, self.count = torch.zeros(b, d, device=dev), torch.zeros(b, d, device=dev)
        # each head and its column's kernel coefficients as one linear map; the temperature
        # divides the sum
        self.heads = [
            (torch.cat([w, kernel.weight[j]]), torch.cat([b_, kernel.bias[j]]))
            for j, (w, b_) in enumerate(head_matrices(model.heads, 1.0))
        ]
        self.steps = StepKernel(kernel, model.vocab)
        # what a column reads of its variable's past (`LastValue.context`) and its place in
        # the step, as one bag of rows per column summed by one lookup: its variable's last
        # tokens (a zero row where none), the steps since and values seen (one row per pair)
        # and `column_pos`
        w = self.c.shape[1]
        pairs = kernel.age.weight[:, None] + kernel.seen.weight[None]  # (AGES + 2, SEEN + 1, W)
        tables = [self.previous_table, self.c.new_zeros(1, w), pairs.reshape(-1, w)]
        self.bag_table = torch.cat([*tables, model.column_pos])
        self.zero_row = len(self.previous_table)
        self.pair_at = self.zero_row + 1
        self.pos_at = self.pair_at + pairs.shape[0] * pairs.shape[1]
        self.fine_col = kernel.fine_col
        self.static_level = self.steps.static_level(self.static)  # (B, D) or None

    @torch.no_grad()
    def draw(self, u: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """Step t's first `stop` token columns (B, stop) (default: all), from uniforms u
        (>= stop, B; with `model.ends` one more, the last row) given the steps committed so
        far."""
        model, kernel, c, b = self.model, self.kernel, self.c, self.c.shape[0]
        stop = len(model.vocab) if stop is None else stop
        s, self.h = model.gru((self.x + model.position.weight[self.t] + c)[:, None], self.h)
        last = None if self.lengths is None else self.t == self.lengths - 1
        if model.ends:
            self.ended = last = self._end(s[:, 0] + self.acted, u[-1])
        if kernel is not None:
            before = self._recalled()
            at = self.steps.anchors(self.last, self.has, self.total, self.count, self.static_level)
        else:
            before = self.before + model.column_pos[:, None]
        base = before + (s[:, 0] + c + self.acted)  # (D, B, W)
        if model.ends:
            base = base + model.end_in.weight[last.long()]
        earlier, drawn = None, []  # (B, W): the step's columns so far; their tokens
        mask, steps, level = self.mask, self.steps, None
        held = None if mask is None else mask.start(b)  # (B, items) the row's items so far
        for j in range(stop):
            z = base[j] if earlier is None else base[j] + earlier
            z = self.mlp(z)
            logits = F.linear(z, *self.heads[j])
            if steps is not None:
                v, f = model.vocab[j], steps.first[j]
                if steps.levels and f == j:  # its level reads the variables drawn before
                    level = steps.level(at, j)
                now = drawn[f] if f < j else None
                logits = steps.logits(j, logits[:, :v], logits[:, v:], at, now, level)
                if self.temperature != 1.0:
                    logits = logits / self.temperature
            if mask is not None:
                allowed = mask.allowed(j, held, self.t, last)
                if allowed is not None:
                    logits = logits.masked_fill(~allowed, float("-inf"))
            tok = pick(logits, u[j])
            if mask is not None:
                held = mask.hold(j, tok, held)
            drawn.append(tok)
            if steps is not None and steps.closes[j]:
                f = steps.first[j]
                steps.drawn(at, j, drawn[f], tok if f < j else self.none)
            e = F.embedding(tok, self.tables[j])
            earlier = e if earlier is None else earlier + e
        return torch.stack(drawn, 1) if drawn else self.none.new_zeros(b, 0)

    def _recalled(self) -> torch.Tensor:
        """(D, B, W) what each column reads of its variable's past, and its place."""
        b, d = self.last.shape
        rows = torch.where(self.has, self.last + self.previous_at, self.zero_row)  # (B, D)
        fine = torch.where(self.fine_col >= 0, rows[:, self.fine_col.clamp(min=0)], self.zero_row)
        pair = self.age * (SEEN + 1) + self.count.long().clamp(max=SEEN)
        place = torch.arange(self.pos_at, self.pos_at + d, device=rows.device).expand(b, d)
        bags = torch.stack([rows[:, self.first], fine, self.pair_at + pair, place], -1)
        before = F.embedding_bag(bags.transpose(0, 1).reshape(d * b, 4), self.bag_table, mode="sum")
        return before.view(d, b, -1)

    def branch(self) -> StepDrawer:
        """A copy whose steps leave this drawer as it is (a step tried with another
        treatment from the same history: the fidelity report)."""
        other = copy.copy(self)
        for name in ("t", "has", "total", "count"):  # those changed in place
            if hasattr(self, name):
                setattr(other, name, getattr(self, name).clone())
        return other

    @torch.no_grad()
    def read(self, tokens: torch.Tensor) -> None:
        """Step t as recorded (B, D), not drawn: the recurrent state moves past it (a real
        history that the simulator goes on from, `Simulator.resume`)."""
        model = self.model
        _, self.h = model.gru((self.x + model.position.weight[self.t] + self.c)[:, None], self.h)
        self.commit(tokens)

    def _end(self, s: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """(B,) whether the step ends each stay, drawn from the recurrent state s (B, W)."""
        model = self.model
        z = self.mlp(s + self.c + model.end_pos)
        logits = F.linear(z, model.end_head.weight, model.end_head.bias) / self.temperature
        must_end = self.t >= model.max_length - 1
        must_go_on = self.t < self.shortest - 1
        if self.lengths is not None:
            must_end, must_go_on = self.t >= self.lengths - 1, self.t < self.lengths - 1
        logits[:, 0] = logits[:, 0].masked_fill(must_end, float("-inf"))
        logits[:, 1] = logits[:, 1].masked_fill(must_go_on & ~must_end, float("-inf"))
        return pick(logits, u).bool()

    @torch.no_grad()
    def commit(self, tokens: torch.Tensor) -> None:
        """Step t's tokens (B, D), those drawn and those set: the state moves to step t + 1."""
        self.t += 1
        self.x = F.embedding(tokens + self.step_at, self.step_table).sum(1)
        if self.model.has_direct:  # what reaches the next step directly
            self.acted = self.model.direct(tokens)
        kernel = self.kernel
        if kernel is None:
            prev = F.embedding(tokens.T + self.previous_at[:, None], self.previous_table)
            self.before = torch.zeros_like(prev).index_add_(0, self.first, prev)[self.first]
            return
        observed = tokens[:, self.first] != kernel.missing  # (B, D)
        self.last = torch.where(observed, tokens, self.last)
        age = torch.where(self.has, (self.age + 1).clamp(max=AGES), AGES + 1)
        self.age = torch.where(observed, 1, age)
        self.has |= observed
        self.total += kernel.place(tokens) * observed
        self.count += observed

    @torch.no_grad()
    def restart(self, rows: torch.Tensor, static: torch.Tensor) -> None:
        """Begin new stays in ``rows`` (B,) bool, with their static tokens (rows, S)."""
        self.static[rows] = static
        if self.lengths is not None:  # the length token is the statics' last
            self.lengths[rows] = static[:, -1] + 1
        self.c[rows] = self.model.static_context(static, len(static))
        self.t[rows] = 0
        self.x[rows] = 0
        self.acted[rows] = 0
        self.ended[rows] = False
        if self.h is not None:
            self.h[:, rows] = 0
        if self.kernel is None:
            self.before[:, rows] = 0
            return
        for state in (self.last, self.has, self.age, self.total, self.count):
            state[rows] = 0
        if self.static_level is not None:
            self.static_level[rows] = self.steps.static_level(static)
