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


#: steps since a variable's last observed value, capped; never observed: 0 at the first
#: step, AGES + 1 after it (so a column knows whether its variable was seen one step back)
AGES = 8
SEEN = 8  #: values of a variable observed so far, capped
#: ridge penalty of `fit_levels`, in observed steps: a static token seen in fewer steps than
#: this moves a level less than its steps' mean says
LEVEL_RIDGE = 10.0
TRANSITION_ROWS = 4096  #: training steps `start_at_transitions` fits to
#: steps per piece of `start_at_transitions`' loss, its gradient summed over the pieces: the
#: kernel's terms for 4,096 steps at once took 1.05 GiB on the demo cohort's variables, 0.37
#: in pieces of 1,024 (the same fit up to float rounding; one piece, as before, bit for bit)
TRANSITION_PIECE = 1024


class LastValue(nn.Module):
    """What each dynamic column knows of its own variable's past (issue 15): the last observed
    value, carried over missing steps, with the number of steps since (`AGES`) and of values
    observed so far (`SEEN`; embedded: how often a lab is measured is a patient's trait); and
    a kernel that its head's logits add, a learned function of each token's distance to that
    value and to the mean of the patient's observed values so far.

    A value of coarse token c and fine token f sits at u = (c + (f + 0.5) / F) / B on its
    variable's [0, 1] scale (`Tokenizer.dynamic_scales`); a coarse token k at (k + 0.5) / B, a
    fine token k of the step's coarse token c at (c + (k + 0.5) / F) / B. A token's features,
    d its signed distance to an anchor (the last value, the mean): log1p(|d| R) / log1p(R)
    (R = B F, the scale's resolution), |d|, d and d^2 per anchor, and 1 where it is the last
    value's own token (levels, which have no scale, take only this one); none for the missing
    token or before the first observed value (`kernel`). The coefficients are a linear map of
    what the head reads, so how strongly values persist depends on the patient, the step, the
    step's earlier columns and how long ago the variable was seen; `start_at_transitions`
    fits their biases to the training steps before training. Product of the head's softmax
    and this kernel: p(x_t | past) ~ p(x_t | context) k(x_t; last, mean), the form of a
    Markov chain that reverts to the patient's own level, which a few hundred patients
    suffice to learn; the missing token keeps the head's probability (`combine`).

    With levels (`static_reads`), a third anchor: the level that the rest of the patient
    predicts for the variable (`level_of`: linear in the statics and in the other variables'
    values, this step's where drawn before, else their last), with its own 4 features before
    the variable's first observed value and 4 after. A kernel around each variable's own past
    alone lets variables drift apart and keeps the first value's weak dependence on the rest;
    this one ties them back (association diff, BENCHMARKS.md "Trajectories").
    `fit_levels` fits the regression before training.
    """

    FEATURES = 9  #: per token: same, then 4 per anchor (last value, mean); levels add 8

    def __init__(
        self,
        scales: list[tuple[int, int, int, bool]],
        groups: list[int],
        vocab: list[int],
        width: int,
        static_vocab: list[int] | None = None,
        static_reads: list[bool] | None = None,
    ) -> None:
        super().__init__()
        d = len(vocab)
        g = torch.tensor(groups)
        first = (g[:, None] == g[None, :]).float().argmax(1)  # the variable's coarse column
        fine = torch.arange(d) != first
        fine_of = torch.full((d,), -1)  # a coarse column's fine column, or -1
        fine_of[first[fine]] = torch.arange(d)[fine]
        missing, coarse, sub, ordered = (torch.tensor(x) for x in zip(*scales, strict=True))
        k = torch.arange(max(vocab))
        valid = (k < torch.tensor(vocab)[:, None]) & (fine[:, None] | (k != missing[:, None]))
        for name, value in {
            "first": first,
            "fine": fine,
            "fine_col": fine_of[first],  # the variable's fine column, or -1
            "missing": missing,
            "coarse": coarse.float(),
            "sub": sub.float(),
            "ordered": ordered.float(),
            "valid": valid,  # (D, V): tokens with features (not padding, not missing)
        }.items():
            self.register_buffer(name, value, persistent=False)
        self.age = nn.Embedding(AGES + 2, width)
        # `static_reads` (per static token column of `static_vocab` sizes, whether it is read):
        # a third anchor, each variable's level given the rest of the patient (`level_of`)
        self.levels = static_reads is not None
        features = self.FEATURES + 8 * self.levels  # the level's, with and without a last
        self.weight = nn.Parameter(torch.zeros(d, features, width))
        self.bias = nn.Parameter(torch.zeros(d, features))
        self.seen = nn.Embedding(SEEN + 1, width)
        if self.levels:
            at = torch.tensor([0, *static_vocab[:-1]]).cumsum(0)
            own = (first == torch.arange(d)) & ordered.bool()  # a scaled variable's first column
            reads = (g[:, None] != g[None, :]) & own[None, :]  # (D, D): the other variables
            now = torch.arange(d)[None, :] < first[:, None]  # ... drawn before j's variable
            static_reads = torch.tensor(static_reads).repeat_interleave(torch.tensor(static_vocab))
            buffers = {"static_at": at, "static_reads": static_reads, "reads": reads, "now": now}
            for name, value in buffers.items():
                self.register_buffer(name, value, persistent=False)
            self.register_buffer("center", torch.full((d,), 0.5))  # the places' mean, saved
            self.level = nn.Parameter(torch.zeros(sum(static_vocab), d))  # per static token
            self.level_bias = nn.Parameter(torch.zeros(d))
            self.cross = nn.Parameter(torch.zeros(d, d))  # per other variable's place

    def level_of(
        self, static: torch.Tensor, last: torch.Tensor, has: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor | None:
        """(B, T, D) or (B, D): the level (place u) of each column's variable that the rest of
        the patient predicts, linear in the static tokens (B, S) and in the other variables'
        places: their value in this step's tokens (B, [T,] D) where their columns come first
        and it is observed, else their last observed value (`last`, where `has`), else their
        mean; None without levels. The sampler adds a variable's term once it is drawn."""
        if not self.levels:
            return None
        prev, moved = self.regressors(last, has, tokens)
        w = self.cross * self.reads
        level = self.level * self.static_reads[:, None]
        base = F.embedding(static + self.static_at, level).sum(-2) + self.level_bias
        base = base.reshape(base.shape[0], *[1] * (last.dim() - 2), -1)
        return (base + prev @ w.T + moved @ (w * self.now).T)[..., self.first]

    def regressors(
        self, last: torch.Tensor, has: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per column, its variable's last observed place less the mean (0 where none), and
        how far this step's tokens move it (0 where not observed now)."""
        prev = torch.where(has, self.place(last) - self.center, 0.0)
        seen = tokens[..., self.first] != self.missing
        return prev, torch.where(seen, self.place(tokens) - self.center - prev, 0.0)

    def history(self, dynamic: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Before each step of dynamic (B, T, D), per column, of its variable: the last
        observed tokens (B, T, D), whether there is one, the steps since it (`AGES`), the
        mean place u of the observed values so far and their number."""
        b, t, d = dynamic.shape
        observed = dynamic[..., self.first] != self.missing  # (B, T, D)
        steps = torch.arange(t, device=dynamic.device)[None, :, None]
        seen = torch.where(observed, steps, -1).cummax(dim=1).values  # last observed at <= t
        seen = torch.cat([seen.new_full((b, 1, d), -1), seen[:, :-1]], dim=1)  # ... at < t
        has = seen >= 0
        last = dynamic.gather(1, seen.clamp(min=0))
        age = torch.where(has, (steps - seen).clamp(max=AGES), (steps > 0) * (AGES + 1))
        u = self.place(dynamic) * observed
        total = torch.cat([u.new_zeros(b, 1, d), u.cumsum(1)[:, :-1]], dim=1)
        count = torch.cat([u.new_zeros(b, 1, d), observed.cumsum(1)[:, :-1]], dim=1)
        return last, has, age, total / count.clamp(min=1), count

    def context(self, recalled: torch.Tensor, history: tuple) -> torch.Tensor:
        """What each column reads of its variable's past (..., D, W): `recalled`, the
        embedding of its last observed tokens, where there is one; the steps since; the
        number of values observed so far (`history` of those steps)."""
        _, has, age, _, count = history
        seen = self.seen(count.long().clamp(max=SEEN))
        return recalled * has[..., None] + self.age(age) + seen

    def place(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., D) tokens of a step -> (..., D) the place u of each column's variable."""
        fine = torch.where(self.fine_col >= 0, tokens[..., self.fine_col.clamp(min=0)], 0)
        return (tokens[..., self.first] + (fine + 0.5) / self.sub) / self.coarse

    def anchors(
        self, last: torch.Tensor, mean: torch.Tensor, level: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(..., D, 4 or 5): per column, of its variable's last observed tokens (..., D): their
        place, coarse and fine token, the mean place `mean` and `level` (`level_of`) where
        the kernel has levels."""
        fine = torch.where(self.fine_col >= 0, last[..., self.fine_col.clamp(min=0)], 0)
        parts = [self.place(last), last[..., self.first], fine, mean]
        return torch.stack([p.float() for p in parts + [level] * (level is not None)], -1)

    def kernel(
        self,
        coef: torch.Tensor,
        now: torch.Tensor,
        anchors: torch.Tensor,
        has: torch.Tensor,
        cols: slice,
    ) -> torch.Tensor:
        """Kernel logits (..., C, V) of the columns `cols`: the features weighted by coef
        (..., C, FEATURES); now (..., C), the step's coarse token of each column's variable
        (read by fine columns), anchors (..., C, 4) and has (..., C)."""
        coarse, sub, fine = self.coarse[cols], self.sub[cols], self.fine[cols]
        u, c_last, f_last, mean, *level = anchors.unbind(-1)
        k = torch.arange(self.valid.shape[1], device=now.device, dtype=u.dtype)
        now = now.to(u.dtype)
        start = torch.where(fine, now / coarse, 0.0)[..., None]  # (..., C, 1)
        pos = start + (k + 0.5) / torch.where(fine, coarse * sub, coarse)[:, None]
        same_fine = (now == c_last)[..., None] & (k == f_last[..., None])
        same = torch.where(fine[:, None], same_fine, k == c_last[..., None])
        r = (coarse * sub)[:, None]
        coef = coef[..., None]  # (..., C, FEATURES, 1); levels read the first feature only
        out = coef[..., 0, :] * same
        ordered = self.ordered[cols, None]

        def term(anchor: torch.Tensor, i: int) -> torch.Tensor:  # coefficients 1 + 4i ...
            d = pos - anchor[..., None]
            a = d.abs()
            w = coef[..., 1 + 4 * i : 5 + 4 * i, :] * ordered[:, None]
            t = w[..., 0, :] * (torch.log1p(a * r) / torch.log1p(r)) + w[..., 1, :] * a
            return t + (w[..., 2, :] + w[..., 3, :] * d) * d

        value = ~(fine & (now == self.missing[cols]))  # a missing value's fine token: none
        out = (out + term(u, 0) + term(mean, 1)) * (has & value)[..., None]
        if level:  # the level shapes a variable's first observed value too, by its own terms
            first = torch.where(has[..., None], term(level[0], 2), term(level[0], 3))
            out = out + first * value[..., None]
        return out * self.valid[cols]

    def logits(
        self,
        heads: torch.Tensor,
        z: torch.Tensor,
        dynamic: torch.Tensor,
        history: tuple,
        static: torch.Tensor,
    ) -> torch.Tensor:
        """(B, T, D, V) logits of every column of steps (B, T, D): the heads' logits `heads`
        with the kernel, given what the heads read z (B, T, D, W), `history(dynamic)` and
        the static tokens (B, S)."""
        last, has, _, mean, _ = history
        coef = torch.einsum("btdw,dfw->btdf", z, self.weight) + self.bias
        level = self.level_of(static, last, has, dynamic)
        now, anchors = dynamic[..., self.first], self.anchors(last, mean, level)
        return self.combine(heads, self.kernel(coef, now, anchors, has, slice(None)), slice(None))

    def combine(self, heads: torch.Tensor, kernel: torch.Tensor, cols: slice) -> torch.Tensor:
        """Logits (..., C, V) of the columns `cols`: the heads' plus the kernel's over the
        value tokens, shifted so that the values' total probability (and so the missing
        token's) stays the heads': the kernel shapes which value, not whether one is seen."""
        values = self.valid[cols, : heads.shape[-1]]  # (C, V): not padding, not missing
        head_values = heads.masked_fill(~values, -torch.inf)
        shift = torch.logsumexp(head_values, -1) - torch.logsumexp(head_values + kernel, -1)
        return heads + torch.where(values, kernel + shift[..., None], 0.0)


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
        return self.context(static)

    def forward(
        self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> Any:
        """static (B, S), dynamic (B, T, D) tokens -> logits [(B, T, v_j)]; with lengths (B,),
        each patient's NLL (B,) instead (`sequence_nll`: the heads in one product, and one
        call of the module, as DistributedDataParallel needs)."""
        logits = self.logits(static, dynamic)  # (B, T, D, V)
        if lengths is None:
            return [logits[:, :, j, :v] for j, v in enumerate(self.vocab)]
        valid = torch.arange(dynamic.shape[1], device=dynamic.device) < lengths[:, None]
        return (column_nll(logits, dynamic) * valid).sum(1)

    def logits(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """static (B, S), dynamic (B, T, D) tokens -> logits (B, T, D, V) of every column
        (padded slots -inf): the heads' and, with `last`, its kernel's."""
        if self.last is None:
            return column_logits(self.heads, self.features(static, dynamic))
        history = self.last.history(dynamic)
        z = self.features(static, dynamic, history)
        return self.last.logits(column_logits(self.heads, z), z, dynamic, history, static)

    def features(
        self, static: torch.Tensor, dynamic: torch.Tensor, history: tuple | None = None
    ) -> torch.Tensor:
        """static (B, S), dynamic (B, T, D) tokens -> what each column's head reads (B, T, D,
        W): `forward` without the heads (`column_logits` applies them all at once);
        `history`: `last.history(dynamic)` where the caller has it."""
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
        return self.norm(self.blocks(z))  # (B, T, D, W)

    def last_step(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """The features (B, D, W) of the last step of dynamic (B, T, D) alone, as `forward`
        computes them (the simulator draws one step at a time: `last_logits`)."""
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
        return self.norm(self.blocks(z))  # (B, D, W)

    def last_logits(self, static: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        """The logits (B, D, V) of the last step of dynamic (B, T, D), as `logits` computes
        them (padded slots -inf): column j's are right once the step's columns < j are set."""
        z = self.last_step(static, dynamic)
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
    each dynamic token column; `scales` (`Tokenizer.dynamic_scales`) turns `LastValue` on."""

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
    ) -> None:
        super().__init__()
        self.statics = StaticModel(static_positions, width, dropout)
        self.sequence = SequenceModel(
            static_positions, dynamic_positions, groups, max_length, width, dropout, scales, levels
        )


def token_counts(heads: nn.ModuleList, tokens: torch.Tensor) -> torch.Tensor:
    """How often each head's tokens occur in `tokens` (rows, columns), every head's counts
    one after another: counts of several parts of the data add up (`start_at_marginals`)."""
    return torch.cat(
        [
            torch.bincount(tokens[:, j].long(), minlength=h.free.out_features)
            for j, h in enumerate(heads)
        ]
    )


def start_at_marginals(heads: nn.ModuleList, counts: torch.Tensor) -> None:
    """Set each head's bias to the log frequency of its tokens (`token_counts`), so training
    starts from the right marginals instead of spending its first steps on them."""
    with torch.no_grad():
        sizes = [h.free.out_features for h in heads]
        for head, c in zip(heads, counts.double().split(sizes), strict=True):
            head.free.bias.copy_(torch.log((c + 0.5) / (c.sum() + 0.5 * len(c))))


def transition_rows(lengths: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """(k, 2) (patient, step) of at most TRANSITION_ROWS live steps of patients with these
    lengths (B,), drawn with `rng`: the steps `start_at_transitions` fits to."""
    steps = torch.arange(int(lengths.max()), device=lengths.device)
    rows = (steps < lengths[:, None]).nonzero()
    chosen = torch.randperm(len(rows), generator=rng, device=rng.device)[:TRANSITION_ROWS]
    return rows[chosen.to(rows.device)]


def transition_features(
    kernel: LastValue, static: torch.Tensor, dynamic: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """At `rows` (k, 2) (patient, step) of static (B, S) and dynamic (B, T, D): the step's
    tokens, per column its variable's last observed tokens, whether there is one and the mean
    place so far, and the patient's static tokens. A patient's history is its own, so any set
    of patients holding the rows' gives the same."""
    dynamic = dynamic.long()
    last, has, _, mean, _ = kernel.history(dynamic)
    at = rows[:, 0], rows[:, 1]
    return *(h[at] for h in (dynamic, last, has, mean)), static.long()[rows[:, 0]]


def fit_levels(kernel: LastValue, features: tuple[torch.Tensor, ...]) -> None:
    """Fit each variable's level (`LastValue.level_of`) to training steps (`transition_features`):
    the ridge regression of its observed places on the one-hot static tokens and the other
    variables' places as `level_of` reads them."""
    tokens, last, has, _, static = features
    size = kernel.level.shape[0]
    with torch.no_grad():
        u = kernel.place(tokens).double()  # (k, D)
        seen = (tokens[:, kernel.first] != kernel.missing).double()  # (k, D)
        kernel.center.copy_((u * seen).sum(0) / seen.sum(0).clamp(min=1))
        onehot = F.one_hot(static + kernel.static_at, size).sum(1) * kernel.static_reads
        onehot = onehot.double()  # (k, V): the static tokens that levels read
        prev, moved = (r.double() for r in kernel.regressors(last, has, tokens))  # (k, D)
        ridge = LEVEL_RIDGE * torch.eye(size + len(u.T), dtype=u.dtype, device=u.device)
        level, cross = torch.zeros_like(kernel.level.T), torch.zeros_like(kernel.cross)
        for j in (kernel.first == torch.arange(len(u.T), device=u.device)).nonzero()[:, 0]:
            w = seen[:, j]
            x = torch.cat([onehot, (prev + moved * kernel.now[j]) * kernel.reads[j]], 1)
            target = w * (u[:, j] - kernel.center[j])
            coef = torch.linalg.solve(x.T @ (x * w[:, None]) + ridge, x.T @ target)
            level[j], cross[j] = coef[:size], coef[size:]
        kernel.level.copy_(level.T)
        kernel.level_bias.copy_(kernel.center)
        kernel.cross.copy_(cross)


def start_at_transitions(model: SequenceModel, features: tuple[torch.Tensor, ...]) -> float:
    """Fit the heads' biases and the `LastValue` kernel's (its coefficients before they read
    anything) to training steps (`transition_features` of `transition_rows`): each column's
    token given its variable's last observed value and mean, the same for every patient.
    Training then starts from values that persist as much as the data's do, instead of
    learning it from zero (on a few hundred patients it stopped before it had).
    Returns the NLL per step it reached (nats)."""
    kernel = model.last
    tokens, last, has, mean, static = features
    if kernel.levels:
        fit_levels(kernel, features)
    level = None if not kernel.levels else kernel.level_of(static, last, has, tokens).detach()
    now, anchors = tokens[:, kernel.first], kernel.anchors(last, mean, level)
    _, bias = padded_heads(model.heads)
    pad = torch.isinf(bias)
    free = bias.detach().masked_fill(pad, 0.0).requires_grad_()
    coef = torch.zeros_like(kernel.bias, requires_grad=True)
    all_ = slice(None)
    opt = torch.optim.LBFGS([free, coef], max_iter=100, line_search_fn="strong_wolfe")

    pieces = [slice(at, at + TRANSITION_PIECE) for at in range(0, len(tokens), TRANSITION_PIECE)]

    def loss(rows: slice) -> torch.Tensor:  # the mean NLL of all steps, these steps' part
        heads = free.masked_fill(pad, -torch.inf)
        kernel_logits = kernel.kernel(coef, now[rows], anchors[rows], has[rows], all_)
        logits = kernel.combine(heads, kernel_logits, all_)
        return column_nll(logits, tokens[rows]).mean() * (len(tokens[rows]) / len(tokens))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        values = []
        for rows in pieces:
            values.append(loss(rows))
            values[-1].backward()
        return torch.stack(values).sum().detach()

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        kernel.bias.copy_(coef)
        for j, head in enumerate(model.heads):
            head.free.bias.copy_(free[j, : head.free.out_features])
        return torch.stack([loss(rows) for rows in pieces]).sum().item()


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
