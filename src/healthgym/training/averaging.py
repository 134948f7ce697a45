"""An exponential moving average of a module's weights, for validation and keeping.

Why: on a few hundred patients the validation loss is measured on a few dozen of them and
the weights after any one optimizer step are noisy; the average of the recent steps' weights
generalises better (issue 15: on the small development cohorts it lifted the marginals, the
missingness and the utility of the samples; BENCHMARKS.md "Trajectories").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

#: updates over which the average warms up: step n keeps min(decay, (1 + n) / (WARMUP + n))
#: of the average, so the first steps' weights do not linger in it as the start's would
WARMUP = 10


class WeightAverage:
    """The average of `module`'s floating-point parameters after each `update`."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.module, self.decay = module, decay
        self.reset()

    def reset(self) -> None:
        """Start the average afresh at the module's current weights."""
        self.average = [p.detach().clone() for p in self._params()]
        self.updates = 0

    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.module.parameters() if p.dtype.is_floating_point]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the module's current weights into the average."""
        keep = min(self.decay, (1 + self.updates) / (WARMUP + self.updates))
        for a, p in zip(self.average, self._params(), strict=True):
            a.lerp_(p, 1 - keep)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The module holds the averaged weights inside the block, its own after it."""
        params = self._params()
        own = [p.detach().clone() for p in params]
        _copy(params, self.average)
        try:
            yield
        finally:
            _copy(params, own)

    def state_dict(self) -> dict[str, Any]:
        return {"average": [a.clone() for a in self.average], "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["average"]
        if len(saved) != len(self.average):
            raise ValueError("the saved weight average is of a different network")
        self.average = [s.to(a.device, a.dtype) for s, a in zip(saved, self.average, strict=True)]
        self.updates = int(state["updates"])


@torch.no_grad()
def _copy(into: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    for p, v in zip(into, values, strict=True):
        p.copy_(v)
