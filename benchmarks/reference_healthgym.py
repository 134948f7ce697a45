"""The default model's sampler and training loss as they were before issue 18, as a baseline.

Copied verbatim from `src/healthgym/models/healthgym/network.py` at commit de4f823 (the
functions `_draw`, `draw_statics`, `draw_steps`, `sequence_nll` and `static_nll`, and the
methods below), so that `benchmarks.default_speed` can time old against new in one run, and
the tests can check that the new code draws from the same distribution and computes the same
losses. They run on today's network modules
(whose parameters and state-dict keys did not change): per column, a small Linear head and
`torch.multinomial`; statics recompute every head for each column.

`legacy()` swaps them into the model and trainer modules for the duration of a block, with
the network's modules as they were (`Embeddings.stack` one lookup per column,
`SequenceModel.recall` a product with the same-variable matrix, `Block` with nn.Dropout).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from healthgym.models.healthgym import model as model_module
from healthgym.models.healthgym import trainer as trainer_module
from healthgym.models.healthgym.layers import Block, Embeddings
from healthgym.models.healthgym.network import SequenceModel, StaticModel


def _draw(logits: torch.Tensor, rng: torch.Generator, temperature: float) -> torch.Tensor:
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=rng).squeeze(1)


def _column_logits(
    model: SequenceModel, j: int, state: torch.Tensor, earlier: torch.Tensor
) -> torch.Tensor:
    z = model.norm(model.blocks(state + earlier + model.column_pos[j]))
    return model.heads[j](z)


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
    lengths: torch.Tensor,
    rng: torch.Generator,
    temperature: float = 1.0,
    mask: object = None,
) -> torch.Tensor:
    """Steps (B, T, D) given static tokens (B, S) and lengths (B,); zeros past each length.
    0.1.0 knew no rows block: `mask` must be None."""
    if mask is not None:
        raise ValueError("the 0.1.0 sampler keeps no rows block")
    b, steps, d = static.shape[0], int(lengths.max()), len(model.vocab)
    c = model.static_context(static, b)  # (B, W)
    out = torch.zeros(b, model.max_length, d, dtype=torch.long, device=static.device)
    x, h, before = torch.zeros_like(c), None, torch.zeros(b, d, c.shape[1], device=c.device)
    for t in range(steps):
        s, h = model.gru((x + model.position.weight[t] + c)[:, None], h)
        s = s[:, 0]  # (B, W): has read steps < t
        earlier = torch.zeros_like(s)
        for j in range(d):
            tok = _draw(_column_logits(model, j, s + c + before[:, j], earlier), rng, temperature)
            out[:, t, j] = tok
            earlier = earlier + model.column_in.tables[j](tok)
        x = model.step_in(out[:, t])
        before = model.recall(out[:, t])
    return out * (torch.arange(model.max_length, device=out.device) < lengths[:, None])[..., None]


def sequence_logits(
    model: SequenceModel, static: torch.Tensor, dynamic: torch.Tensor
) -> list[torch.Tensor]:
    """SequenceModel.forward as it was: logits [(B, T, v_j)], one head call per column."""
    b, t, _ = dynamic.shape
    c = model.static_context(static, b)
    x = model.step_in(dynamic)
    x = torch.cat([x.new_zeros(b, 1, x.shape[-1]), x[:, :-1]], dim=1)
    x = x + model.position.weight[:t] + c[:, None]
    s, _ = model.gru(x)
    e = model.column_in.stack(dynamic)
    earlier = e.cumsum(dim=2) - e
    before = model.recall(dynamic[:, :-1])
    before = torch.cat([before.new_zeros(b, 1, *before.shape[2:]), before], dim=1)
    z = s[:, :t, None] + earlier + before + model.column_pos + c[:, None, None]
    z = model.norm(model.blocks(z))
    return [head(z[:, :, j]) for j, head in enumerate(model.heads)]


def sequence_nll(
    model: SequenceModel, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """(B,) NLL of each patient's steps given the statics and length (nats), padding ignored."""
    b, t, _ = dynamic.shape
    logits = sequence_logits(model, static, dynamic)
    valid = torch.arange(t, device=dynamic.device) < lengths[:, None]  # (B, T)
    ce = sum(
        F.cross_entropy(lg.reshape(b * t, -1), dynamic[:, :, j].reshape(-1), reduction="none")
        for j, lg in enumerate(logits)
    ).view(b, t)
    return (ce * valid).sum(1)


def static_nll(model: StaticModel, static: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """`network.static_nll` as it was: one cross-entropy per column's head."""
    b, n = static.shape
    known_count = torch.randint(0, n, (b, 1), generator=rng, device=static.device)
    rank = torch.rand(b, n, generator=rng, device=static.device).argsort(1).argsort(1)
    in_order = torch.rand(b, 1, generator=rng, device=static.device) < 0.5
    rank = torch.where(in_order, torch.arange(n, device=static.device), rank)
    known = rank < known_count  # (B, S)
    inputs = torch.where(known, static, model.unknown(b, static.device))
    logits = model(inputs)
    ce = torch.stack(
        [F.cross_entropy(lg, static[:, j], reduction="none") for j, lg in enumerate(logits)], 1
    )  # (B, S)
    return (ce * ~known).sum(1) * n / (n - known_count.squeeze(1))


def _stack(self: Embeddings, tokens: torch.Tensor) -> torch.Tensor:
    """`Embeddings.stack` as it was: one lookup per column, stacked."""
    return torch.stack([t(tokens[..., j]) for j, t in enumerate(self.tables)], dim=-2)


def _recall(self: SequenceModel, previous: torch.Tensor) -> torch.Tensor:
    """`SequenceModel.recall` as it was: a product with the (D, D) same-variable matrix."""
    return torch.einsum("...iw,ji->...jw", self.previous.stack(previous), self.same)


def _block(self: Block, x: torch.Tensor) -> torch.Tensor:
    """`Block.forward` as it was: nn.Dropout."""
    return x + self.drop(self.down(F.gelu(self.up(self.norm(x)))))


def _adamw(params: Any, cfg: Any) -> torch.optim.AdamW:
    """The trainer's optimizer as it was: AdamW's per-tensor loop."""
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def tokens_of(tokens: Any) -> tuple[Any, Any, Any]:
    """(static, dynamic, lengths) of a TokenizedCohort."""
    return tokens.static, tokens.dynamic, tokens.lengths


@contextlib.contextmanager
def legacy(sampling: bool = True, training: bool = True) -> Iterator[None]:
    """Within the block, `HealthGym` samples (and/or trains) with the functions above."""
    saved = {
        (model_module, "draw_statics"): model_module.draw_statics,
        (model_module, "draw_steps"): model_module.draw_steps,
        (trainer_module, "sequence_nll"): trainer_module.sequence_nll,
        (trainer_module, "static_nll"): trainer_module.static_nll,
        (trainer_module, "adamw"): trainer_module.adamw,
        (trainer_module, "STATIC_PATIENCE"): trainer_module.STATIC_PATIENCE,
        (Embeddings, "stack"): Embeddings.stack,
        (SequenceModel, "recall"): SequenceModel.recall,
        (Block, "forward"): Block.forward,
    }
    try:
        if sampling:
            model_module.draw_statics, model_module.draw_steps = draw_statics, draw_steps
        if training:
            trainer_module.sequence_nll, trainer_module.static_nll = sequence_nll, static_nll
            trainer_module.adamw = _adamw
            trainer_module.STATIC_PATIENCE = 8  # it was the run's `patience` (default 8)
        if sampling or training:
            Embeddings.stack, SequenceModel.recall, Block.forward = _stack, _recall, _block
        yield
    finally:
        for (module, name), fn in saved.items():
            setattr(module, name, fn)
