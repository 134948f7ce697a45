"""The last-value kernel (`LastValue`, issue 15): what each dynamic column knows of its own
variable's past, and the logits it adds around the last value, the patient's mean and level."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: steps since a variable's last observed value, capped; never observed: 0 at the first
#: step, AGES + 1 after it (so a column knows whether its variable was seen one step back)
AGES = 8
SEEN = 8  #: values of a variable observed so far, capped


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
        # index buffers from the layout: on the CPU even where the network is built on the
        # meta device (a loaded run folder's sizes are checked that way, `check_sizes`)
        with torch.device("cpu"):
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
            with torch.device("cpu"):
                at = torch.tensor([0, *static_vocab[:-1]]).cumsum(0)
                own = (first == torch.arange(d)) & ordered.bool()  # a scaled variable's own
                reads = (g[:, None] != g[None, :]) & own[None, :]  # (D, D): the other variables
                now = torch.arange(d)[None, :] < first[:, None]  # ... drawn before j's variable
                static_reads = torch.tensor(static_reads).repeat_interleave(
                    torch.tensor(static_vocab)
                )
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
        w = self.level_weights()
        base = self.static_level(static)
        base = base.reshape(base.shape[0], *[1] * (last.dim() - 2), -1)
        return (base + prev @ w.T + moved @ (w * self.now).T)[..., self.first]

    def static_level(self, static: torch.Tensor) -> torch.Tensor:
        """(B, D) the levels' part that the static tokens (B, S) give, per column."""
        level = self.level * self.static_reads[:, None]
        return F.embedding(static + self.static_at, level).sum(-2) + self.level_bias

    def level_weights(self) -> torch.Tensor:
        """(D, D): column j's level weight on the place of variable (own column) i."""
        return self.cross * self.reads

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
        observed = torch.ne(dynamic[..., self.first], self.missing)  # (B, T, D)
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
