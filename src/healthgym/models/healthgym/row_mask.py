"""The schema's rows block kept while sampling (issue 33): tokens that would break it get no
probability.

A step's token columns are drawn one after another (treatments last). Before a variable's
first column is drawn, every token that would put an item in the row that the row's items so
far exclude (`rows.exclusive`), a last-only item anywhere but the stay's last step, or a
first-only item anywhere but its first, is masked out; the rest keep their relative
probabilities. A last-only (first-only) *pattern* is a whole row: the row's variables so far
are tracked against it, and where they all match it at the step's last variable (drawn last:
the treatments, so a simulator that is given them does not keep patterns), the token that
would complete it is masked. Where every token of a column would be masked (a declaration
the model cannot keep), the column is drawn unmasked: sampling never stalls.
"""

from __future__ import annotations

import torch

from .tokenizer import TokenColumn, Tokenizer


class RowMask:
    """Per first token column of a dynamic variable, which items each token puts in the row,
    and which patterns it leaves (the row's state: its items, then one flag per pattern, 1
    where the row no longer matches it)."""

    def __init__(self, tokenizer: Tokenizer, device: torch.device | str = "cpu") -> None:
        rules = tokenizer.schema.rows
        named = {i for pair in rules.exclusive for i in pair} | {*rules.last, *rules.first}
        self.items = sorted(named)
        index = {item: k for k, item in enumerate(self.items)}
        n = len(self.items)
        self.exclusive = torch.zeros(n, n)
        for a, b in rules.exclusive:
            self.exclusive[index[a], index[b]] = self.exclusive[index[b], index[a]] = 1.0
        self.last = torch.tensor([i in rules.last for i in self.items], dtype=torch.bool)
        self.first = torch.tensor([i in rules.first for i in self.items], dtype=torch.bool)
        patterns = [*rules.last_patterns, *rules.first_patterns]
        self.pattern_last = torch.tensor(
            [k < len(rules.last_patterns) for k in range(len(patterns))], dtype=torch.bool
        )
        self.tokens: dict[int, torch.Tensor] = {}  # column -> (vocab, items + patterns) 0/1
        self.final = -1  # the column that completes a pattern: the step's last variable's first
        column = 0
        for c in tokenizer.dynamic_columns:
            holds = torch.zeros(c.n_tokens, n + len(patterns))
            for item, k in index.items():
                holds[_tokens_of(c, item), k] = 1.0
            for k, pattern in enumerate(patterns):
                mine = [i for i in pattern if i.partition("=")[0] == c.name]
                keeps = _tokens_of(c, mine[0]) if mine else _tokens_of(c, None)
                holds[:, n + k] = 1.0
                holds[keeps, n + k] = 0.0
            if holds.any():
                self.tokens[column] = holds.to(device)
            self.final = column
            column += len(c.vocab)
        self.exclusive = self.exclusive.to(device)
        self.last, self.first = self.last.to(device), self.first.to(device)
        self.pattern_last = self.pattern_last.to(device)

    @classmethod
    def of(cls, tokenizer: Tokenizer, device: torch.device | str = "cpu") -> RowMask | None:
        """The mask of the tokenizer's schema, or None where the schema declares no rules."""
        return cls(tokenizer, device) if tokenizer.schema.rows else None

    def start(self, b: int) -> torch.Tensor:
        """(B, items + patterns) a new row: no items, every pattern still matched."""
        return self.exclusive.new_zeros(b, len(self.items) + len(self.pattern_last))

    def allowed(
        self, j: int, held: torch.Tensor, t: torch.Tensor, last: torch.Tensor | None
    ) -> torch.Tensor | None:
        """(B, vocab_j) tokens of column j that keep the rules at steps t (B,), `last` (B,)
        where the step is the stay's last (None: not known, last-only items free); None
        where no rule applies to the column."""
        holds = self.tokens.get(j)
        if holds is None:
            return None
        n = len(self.items)
        forbid = (held[:, :n] @ self.exclusive) > 0  # (B, items)
        forbid |= self.first[None] & (t != 0)[:, None]
        if last is not None:
            forbid |= self.last[None] & ~last[:, None]
        bad = forbid.float() @ holds[:, :n].T  # (B, vocab): the token holds a forbidden item
        if j == self.final and len(self.pattern_last):
            wrong = ~self.pattern_last[None] & (t != 0)[:, None]  # (B, patterns) misplaced
            if last is not None:
                wrong |= self.pattern_last[None] & ~last[:, None]
            wrong &= held[:, n:] == 0  # the row so far matches the pattern
            bad = bad + wrong.float() @ (1.0 - holds[:, n:]).T  # the token completes it
        ok = bad == 0
        return ok | ~ok.any(dim=1, keepdim=True)  # nothing allowed: draw unmasked

    def hold(self, j: int, tokens: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """The row's state after column j drew `tokens` (B,)."""
        holds = self.tokens.get(j)
        return held if holds is None else torch.maximum(held, holds[tokens])


def _tokens_of(c: TokenColumn, item: str | None) -> list[int]:
    """The first-column tokens of a tokenizer column that put `item` in the row (`NAME`: any
    value present; `NAME=LEVEL`: that level), or leave the variable empty (None)."""
    n = c.n_tokens
    present = n - 1 if c.missing else n  # the missing token is last
    if item is None:
        return [n - 1] if c.missing else []
    name, _, level = item.partition("=")
    if name != c.name:
        return []
    if not level:
        return list(range(present))
    return [[str(v) for v in c.values].index(level)] if c.kind == "levels" else []
