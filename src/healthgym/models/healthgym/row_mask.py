"""The schema's rows block kept while sampling (issue 33): tokens that would break it get no
probability.

A step's token columns are drawn one after another (treatments last). Before a variable's
first column is drawn, every token that would put an item in the row that the row's items so
far exclude (`rows.exclusive`), a last-only item anywhere but the stay's last step, or a
first-only item anywhere but its first, is masked out; the rest keep their relative
probabilities. Where every token of a column would be masked (a declaration the model cannot
keep), the column is drawn unmasked: sampling never stalls.
"""

from __future__ import annotations

import torch

from .tokenizer import Tokenizer


class RowMask:
    """Per first token column of a dynamic variable, which items each token puts in the row."""

    def __init__(self, tokenizer: Tokenizer, device: torch.device | str = "cpu") -> None:
        rules = tokenizer.schema.rows
        named = {i for pair in rules.exclusive for i in pair} | {*rules.last, *rules.first}
        self.items = sorted(named)
        index = {item: k for k, item in enumerate(self.items)}
        n = len(self.items)
        self.exclusive = torch.zeros(n, n)
        for a, b in rules.exclusive:
            self.exclusive[index[a], index[b]] = self.exclusive[index[b], index[a]] = 1.0
        self.last = torch.tensor([i in rules.last for i in self.items])
        self.first = torch.tensor([i in rules.first for i in self.items])
        self.tokens: dict[int, torch.Tensor] = {}  # column -> (vocab, items) 0/1
        column = 0
        for c in tokenizer.dynamic_columns:
            holds = torch.zeros(c.n_tokens, n)
            present = c.n_tokens - 1 if c.missing else c.n_tokens  # the missing token is last
            for item, k in index.items():
                name, _, level = item.partition("=")
                if name != c.name:
                    continue
                if not level:
                    holds[:present, k] = 1.0
                elif c.kind == "levels":
                    at = [str(v) for v in c.values].index(level)
                    holds[at, k] = 1.0
            if holds.any():
                self.tokens[column] = holds.to(device)
            column += len(c.vocab)
        self.exclusive = self.exclusive.to(device)
        self.last, self.first = self.last.to(device), self.first.to(device)

    @classmethod
    def of(cls, tokenizer: Tokenizer, device: torch.device | str = "cpu") -> RowMask | None:
        """The mask of the tokenizer's schema, or None where the schema declares no rules."""
        return cls(tokenizer, device) if tokenizer.schema.rows else None

    def start(self, b: int) -> torch.Tensor:
        """(B, items) the items a new row holds: none."""
        return self.exclusive.new_zeros(b, len(self.items))

    def allowed(
        self, j: int, held: torch.Tensor, t: torch.Tensor, last: torch.Tensor | None
    ) -> torch.Tensor | None:
        """(B, vocab_j) tokens of column j that keep the rules at steps t (B,), `last` (B,)
        where the step is the stay's last (None: not known, last-only items free); None
        where no rule applies to the column."""
        holds = self.tokens.get(j)
        if holds is None:
            return None
        forbid = (held @ self.exclusive) > 0  # (B, items)
        forbid |= self.first[None] & (t != 0)[:, None]
        if last is not None:
            forbid |= self.last[None] & ~last[:, None]
        ok = (forbid.float() @ holds.T) == 0  # (B, vocab): the token holds no forbidden item
        return ok | ~ok.any(dim=1, keepdim=True)  # nothing allowed: draw unmasked

    def hold(self, j: int, tokens: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """The row's items after column j drew `tokens` (B,)."""
        holds = self.tokens.get(j)
        return held if holds is None else torch.maximum(held, holds[tokens])
