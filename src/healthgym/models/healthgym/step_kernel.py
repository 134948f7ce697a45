"""The last-value kernel one token column at a time, as `StepDrawer` draws a step (issue 29).

`LastValue.logits` scores every column of every step at once (training); a step drawn
column after column needs column j's kernel given what its head reads and the step's tokens
so far. This computes the same distribution with far fewer passes over (patients, tokens):

- every per-column constant (its scale, resolution, which anchors it reads, its missing
  token) is fixed once, not re-sliced from buffers at each column;
- the gates (a variable seen before, a value this step, an ordered scale) multiply the
  coefficients (patients, features), not the logits (patients, tokens);
- the linear and quadratic terms of the three anchors (last value, patient mean, level) sum
  to one polynomial in the token's place before they meet the tokens; a term constant over a
  column's value tokens changes no probability (the missing token's is the head's alone,
  `LastValue.combine`), so it is dropped;
- the level anchor (`LastValue.level_of`) is kept up to date as the step's variables are
  drawn: its static part is fixed per patient, the last values' part per step, and each
  drawn variable adds its move once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .kernel import LastValue


@dataclass
class Anchors:
    """What a step's columns read of their variables' past, by column (D tuples of (B,)):
    the last value's place, coarse and fine tokens, the mean place, whether one was seen; with
    levels, (B, D): the last values less the centre, the levels before this step's moves, and
    the moves of the variables drawn so far this step."""

    u: tuple[torch.Tensor, ...]
    coarse: tuple[torch.Tensor, ...]
    fine: tuple[torch.Tensor, ...]
    mean: tuple[torch.Tensor, ...]
    has: tuple[torch.Tensor, ...]
    prev: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    level: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    moved: torch.Tensor = field(default_factory=lambda: torch.empty(0))


class StepKernel:
    """Per-column constants of a `LastValue` kernel and the per-step anchors it reads."""

    def __init__(self, kernel: LastValue, vocab: list[int]) -> None:
        self.kernel = kernel
        d, dev = len(vocab), kernel.weight.device  # the constants live with the weights
        first, fine = kernel.first.tolist(), kernel.fine.tolist()
        coarse, sub = kernel.coarse.tolist(), kernel.sub.tolist()
        missing, ordered = kernel.missing.tolist(), kernel.ordered.tolist()
        self.first, self.fine, self.missing = first, fine, missing
        self.coarse, self.sub = coarse, sub
        self.center = kernel.center.tolist() if kernel.levels else None
        self.ordered = [bool(o) for o in ordered]
        # the variable's columns are consecutive (coarse, then fine): its last column
        self.closes = [j == d - 1 or first[j + 1] != first[j] for j in range(d)]
        self.value_tokens = [  # a coarse column's tokens that are values (the missing: last)
            missing[j] if (missing[j] >= 0 and not fine[j]) else None for j in range(d)
        ]
        assert all(m is None or m == v - 1 for m, v in zip(self.value_tokens, vocab, strict=True))
        self.places, self.resolution, self.step = [], [], []
        for j in range(d):
            width = coarse[j] * sub[j] if fine[j] else coarse[j]
            k = torch.arange(vocab[j], dtype=torch.float32, device=dev)
            self.places.append(((k + 0.5) / width, ((k + 0.5) / width) ** 2))
            r = coarse[j] * sub[j]
            self.resolution.append((r, 1.0 / math.log1p(r)))
            self.step.append(1.0 / coarse[j])  # a fine column's place starts at coarse / B
        f = kernel.weight.shape[1]
        self.levels = kernel.levels
        # gates per coefficient: [same, 4 x last value, 4 x mean, 4 x level seen, 4 x level
        # unseen]; (with a last value, without one), times `ordered` on the scale's terms
        seen, unseen = torch.zeros(f, device=dev), torch.zeros(f, device=dev)
        seen[:13], unseen[13:] = 1.0, 1.0
        self.gates = []
        for j in range(d):
            o = 1.0 if self.ordered[j] else 0.0
            scale = torch.ones(f, device=dev)
            scale[1:] = o
            self.gates.append((seen * scale, unseen * scale))
        if self.levels:
            with torch.no_grad():
                w = kernel.level_weights()  # (D, D): column j's weight on variable i
                self.cross = w.T.contiguous()  # prev @ cross: every column's last-value part
                self.moves = (w * kernel.now)[first].T.contiguous()  # (D, D) by first column
            # the variables other columns read: a scaled variable's own (first) column
            self.read = (
                kernel.reads.any(0) & (kernel.first == torch.arange(d, device=dev))
            ).tolist()

    # ---- per patient and per step ------------------------------------------------------------
    @torch.no_grad()
    def static_level(self, static: torch.Tensor) -> torch.Tensor | None:
        """(B, D) the levels' part that the statics (B, S) give (fixed for the stay)."""
        return self.kernel.static_level(static) if self.levels else None

    @torch.no_grad()
    def anchors(
        self,
        last: torch.Tensor,
        has: torch.Tensor,
        total: torch.Tensor,
        count: torch.Tensor,
        static_level: torch.Tensor | None,
    ) -> Anchors:
        """What the step's columns read, by column: the last value's place, coarse and fine
        tokens, the mean place, whether seen (each a tuple of D (B,) tensors), and the
        levels' state (the last values' part and no moves yet)."""
        k = self.kernel
        place = k.place(last)  # (B, D)
        fine = torch.where(k.fine_col >= 0, last[:, k.fine_col.clamp(min=0)], 0)
        out = Anchors(
            place.unbind(1),
            last[:, k.first].unbind(1),
            fine.unbind(1),
            (total / count.clamp(min=1)).unbind(1),
            has.unbind(1),
        )
        if static_level is not None:
            out.prev = torch.where(has, place - k.center, 0.0)
            out.level = static_level + out.prev @ self.cross  # (B, D) before this step's moves
            out.moved = torch.zeros_like(out.prev)
        return out

    def level(self, at: Anchors, j: int) -> torch.Tensor:
        """(B,) column j's level given the variables drawn so far this step."""
        f = self.first[j]
        return at.level[:, f] + at.moved @ self.moves[:, f]

    def drawn(self, at: Anchors, j: int, coarse: torch.Tensor, fine: torch.Tensor) -> None:
        """After column j, the last of its variable, drew (coarse, fine) tokens (B,): the
        variable's move from its last value, which later columns' levels read."""
        f = self.first[j]
        if not (self.levels and self.read[f]):
            return
        place = (coarse + (fine + 0.5) / self.sub[f]) / self.coarse[f]
        moved, prev = at.moved, at.prev
        now = place - self.center[f] - prev[:, f]
        moved[:, f] = torch.where(coarse != self.missing[f], now, 0.0)

    # ---- one column ----------------------------------------------------------------------------
    def logits(
        self,
        j: int,
        heads: torch.Tensor,
        coef: torch.Tensor,
        at: Anchors,
        now: torch.Tensor | None,
        level: torch.Tensor | None,
    ) -> torch.Tensor:
        """Column j's logits (B, v_j): the head's `heads` (B, v_j) with the kernel of
        coefficients `coef` (B, FEATURES); `now`, the step's coarse token of the variable (a
        fine column's), `level` its level (`level`), None without levels."""
        has = at.has[j]
        seen, unseen = self.gates[j]
        gate = torch.where(has[:, None], seen, unseen)  # (B, F)
        fine = self.fine[j]
        if fine:  # a missing value's fine token has no kernel
            gate = gate * (now != self.missing[j])[:, None]
        w = coef * gate
        kern = heads.new_zeros(heads.shape)
        c_last = at.coarse[j]
        if fine:  # the last value's own token: its fine token, where the coarse one is its
            hit = w[:, 0] * (now == c_last)
            kern.scatter_(1, at.fine[j][:, None], hit[:, None])
        else:
            kern.scatter_(1, c_last[:, None], w[:, :1])
        if self.ordered[j]:
            kern += self._scale_terms(j, w, at, now, level)
        logits = heads
        m = self.value_tokens[j]
        if m is None:  # every token a value: a constant shift changes nothing
            return logits + kern
        values, kv = heads[:, :m], kern[:, :m]  # the kernel shapes which value, not whether
        shift = torch.logsumexp(values, 1) - torch.logsumexp(values + kv, 1)
        return torch.cat([values + kv + shift[:, None], heads[:, m:]], 1)

    def _scale_terms(
        self,
        j: int,
        w: torch.Tensor,
        at: Anchors,
        now: torch.Tensor | None,
        level: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, v_j) the terms of the token's distance d to each anchor: log1p(|d| R) /
        log1p(R) and |d| per anchor, and the anchors' linear and quadratic terms as one
        polynomial in the token's place (less its constant)."""
        b = w.shape[0]
        anchors = [at.u[j], at.mean[j]]
        terms = w[:, 1:9].reshape(b, 2, 4)
        if level is not None:  # the level's 4 coefficients, seen or not (the other gated 0)
            anchors.append(level)
            terms = torch.cat([terms, (w[:, 9:13] + w[:, 13:17])[:, None]], 1)
        a = torch.stack(anchors, 1)  # (B, A)
        k, k2 = self.places[j]
        start = now * self.step[j] if self.fine[j] else None  # a fine column's coarse place
        off = -a if start is None else start[:, None] - a  # (B, A): d = off + k
        d = (off[:, :, None] + k).abs()  # (B, A, v)
        r, inv = self.resolution[j]
        near = (torch.log1p(d * r) * (terms[:, :, 0:1] * inv) + d * terms[:, :, 1:2]).sum(1)
        # sum_i w2_i d_i + w3_i d_i^2, d_i = p - a_i: p (sum w2_i - 2 w3_i a_i) + p^2 sum w3_i
        alpha = (terms[:, :, 2] - 2 * terms[:, :, 3] * a).sum(1)
        beta = terms[:, :, 3].sum(1)
        if start is not None:  # p = start + k: k (alpha + 2 start beta) + k^2 beta
            alpha = alpha + 2 * start * beta
        return torch.addcmul(near + alpha[:, None] * k, beta[:, None], k2)
