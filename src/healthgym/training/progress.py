"""What a training run shows while it runs: tqdm's bar on a terminal or in a notebook; one
plain line per epoch where stderr is a file or a pipe (a log, CI, `nohup`), which a bar
would fill with one line of carriage returns thousands of characters long."""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether stderr is a terminal, or the process is a notebook's kernel."""
    return "ipykernel" in sys.modules or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


class Progress:
    """Steps, losses and epochs of a run, shown as a bar or as plain lines (see the module);
    `disable` shows nothing."""

    def __init__(self, total: int | None, initial: int, unit: str, disable: bool) -> None:
        self.disable, self.unit, self.step = disable, unit, initial
        self.total, self.losses, self.began = total, "", time.monotonic()
        self.bar = None
        if not disable and interactive():
            self.bar = tqdm(total=total, initial=initial, unit=unit)

    def say(self, line: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if self.disable:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def stepped(self, losses: dict[str, str]) -> None:
        self.step += 1
        self.losses = ", ".join(f"{k}={v}" for k, v in losses.items())
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix(losses)

    def epoch_ended(self, epoch: int, epochs: int) -> None:
        if self.disable or self.bar is not None:
            return
        of = f"/{self.total}" if self.total else ""
        seconds = time.monotonic() - self.began
        self.say(
            f"epoch {epoch}/{epochs}: {self.step}{of} {self.unit}s, {seconds:.0f} s"
            f"{'; ' + self.losses if self.losses else ''}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
