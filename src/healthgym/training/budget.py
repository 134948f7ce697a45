"""A run's time budget (``max_minutes``): wall time from when the command or `fit` began, set-up
included. Training stops at the last step expected to end inside it, leaving time for what
must follow (the epoch's end where the next step closes one, the checkpoint and the weights);
the estimates are the run's own measured times, so the command ends near its budget, not a
step, a validation pass or a set-up later."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: Weight of the newest step in the running estimate of a step's time.
_SMOOTHING = 0.3


@dataclass
class Budget:
    minutes: float
    began: float = field(default_factory=time.monotonic)  # time.monotonic() at the start
    seconds: dict[str, float] = field(default_factory=dict)  # measured: step, epoch_end, save

    def __post_init__(self) -> None:
        if not 0 < self.minutes < float("inf"):
            raise ValueError(f"max_minutes must be a number > 0, got {self.minutes}")

    @classmethod
    def of(cls, max_minutes: float | Budget | None, began: float | None = None) -> Budget | None:
        """A `max_minutes` argument as a budget: None, one already begun, or minutes from
        ``began`` (a `time.monotonic()` reading; default: now)."""
        if max_minutes is None or isinstance(max_minutes, Budget):
            return max_minutes
        return cls(max_minutes, time.monotonic() if began is None else began)

    def took(self, what: str, seconds: float) -> None:
        """Record how long a step, an epoch's end or a checkpoint took."""
        old = self.seconds.get(what)
        self.seconds[what] = seconds if old is None else old + _SMOOTHING * (seconds - old)

    def spent(self, next_closes_epoch: bool) -> bool:
        """Whether the next step (and, if it closes the epoch, the epoch's end), a checkpoint
        and the weights would overrun the budget."""
        s = self.seconds
        need = s.get("step", 0.0) + 2 * s.get("save", 0.0)
        if next_closes_epoch:
            need += s.get("epoch_end", 0.0)
        return time.monotonic() + need >= self.began + 60 * self.minutes

    def set_up_line(self) -> str:
        """What the budget covers and how much of it set-up took (for the log)."""
        used = time.monotonic() - self.began
        return (
            f"budget {self.minutes:g} min of wall time: set-up took {used:.1f} s of it; "
            "training stops at the last step expected to end inside it"
        )
