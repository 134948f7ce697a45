"""Where training starts: heads at the data's marginals, and the kernel and head biases fitted
to training transitions (`start_at_transitions`), so the first steps are not spent on them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernel import LastValue
from .layers import column_nll, padded_heads
from .network import SequenceModel

#: ridge penalty of `fit_levels`, in observed steps: a static token seen in fewer steps than
#: this moves a level less than its steps' mean says
LEVEL_RIDGE = 10.0
TRANSITION_ROWS = 4096  #: training steps `start_at_transitions` fits to
#: steps per piece of `start_at_transitions`' loss, its gradient summed over the pieces: bounds
#: the memory of the kernel's terms (the same fit up to float rounding)
TRANSITION_PIECE = 1024


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
        seen = torch.ne(tokens[:, kernel.first], kernel.missing).double()  # (k, D)
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
