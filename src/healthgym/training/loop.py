"""The one training loop: a run folder, resume, checkpoints, metrics, limits, threads.

Every model family trains through `Trainer.run`. A family subclasses `Trainer` and plugs in
what is its own: the batches of an epoch, one optimisation step, its state, and hooks at the
start of a fresh run, the end of an epoch and the end of training. The loop owns the rest:

- the run folder: ``metrics.jsonl`` (rows appended as they come, cut back to the checkpoint
  on resume), ``checkpoints/ckpt-<step>.pt`` (atomic, newest `KEEP`, a corrupt one set aside
  and the previous one used) and ``learning_dynamics.png``;
- resume: the checkpoint's settings and data fingerprint must match this run's (the
  family's ``resumable`` settings may change); the position (epoch, batch, step) is exact, so
  a resumed run ends as an uninterrupted one would where the family's steps are seeded;
- limits: ``max_minutes`` (a wall-time budget, `training.budget`: stops after the last step
  expected to end inside it and checkpoints that position),
  ``stop_after_steps`` (the same after k steps; for tests and benchmarks), and the
  divergence guard (a NaN, inf or too large loss stops the run; the last checkpoint stays);
- the CPU thread and allocator policy of `training.runtime`, the progress bar, and
  rank-0-only writes in a distributed run (every process steps; rank 0 reads, writes and
  decides when to stop).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..data.atomic import write_atomic
from . import distributed
from .budget import Budget
from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from .progress import Progress
from .run_folder import METRICS_FILE, PLOT_FILE
from .runtime import cpu_threads, keep_freed_memory, resolve_threads

#: Checkpoint format of this release (every family); 0.1.0 wrote family-specific ones.
CHECKPOINT_FORMAT = "healthgym-checkpoint-2"


class TrainingDiverged(RuntimeError):
    """A loss became NaN/inf or exceeded ``max_loss``; the last good checkpoint is untouched."""


@dataclass(frozen=True)
class TrainResult:
    """How a ``fit`` call ended."""

    epochs: int  #: epochs completed by the run so far (all fit calls)
    steps: int  #: optimisation steps done by the run so far
    stopped_early: str | None  #: None, "max_minutes", "stop_after_steps" or "early_stopping"
    checkpoint: Path | None  #: newest checkpoint written by this call
    #: validation loss of the weights kept, for families that validate (else None)
    best_val: float | None = None


@dataclass(frozen=True)
class Position:
    """Where a run stands: the next batch to train is ``batch`` of ``epoch``."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def fingerprint(*tensors: torch.Tensor) -> str:
    """Hash of the training data (shapes and values), so a run resumes only on its own data."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        for chunk in t.reshape(-1).split(1 << 20):  # the digest of the whole, without a copy
            h.update(chunk.numpy().tobytes())
    return h.hexdigest()


class Trainer:
    """Base of every family's trainer; `run` is the loop, the rest are the family's hooks.

    Subclasses set ``family`` (its name: the checkpoint names it), ``guarded`` (losses the
    divergence guard watches), ``resumable`` (settings a resumed run may change), ``shown``
    (losses on the progress bar) and ``config`` (with ``epochs`` and ``max_loss``), and
    implement `epoch_batches`, `step`, `state_dict` and `load_state_dict`.
    """

    family: ClassVar[str]
    guarded: ClassVar[tuple[str, ...]]
    resumable: ClassVar[frozenset[str]] = frozenset({"epochs", "device"})
    shown: ClassVar[tuple[str, ...]] = ()
    #: what one step is, for the progress bar and messages
    unit: ClassVar[str] = "step"
    #: trains data-parallel in a torchrun job (`training.distributed`); else one process
    distributable: ClassVar[bool] = False
    config: Any
    device: torch.device
    #: torch threads on CPU: an int or "auto"; None: $HEALTHGYM_THREADS, else "auto"
    threads: int | str | None = None
    ctx: distributed.Context = distributed.Context()
    #: called on rank 0 once the run folder is known to hold this run (a resume matched its
    #: checkpoint, or a new run may start) and before the first step; nothing is written
    #: to the folder before it when a resume is refused
    before_training: Callable[[], None] | None = None
    #: the family's networks wrapped in DistributedDataParallel while a distributed fit runs
    ddp: Any = None

    # ---- the family's hooks ------------------------------------------------------------------
    def prepare(self, *data: torch.Tensor) -> str:
        """Check and keep the training data (on the device); its `fingerprint`."""
        raise NotImplementedError

    @property
    def network(self) -> torch.nn.Module:
        """The network that samples, once trained."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What shapes the run; a resume must match it but for ``resumable`` keys."""
        return self.config.to_dict()

    def start(self) -> None:
        """Called once before the first step of a fresh run (not on resume)."""

    def epoch_batches(self, epoch: int) -> Sequence[Any]:
        """The batches of ``epoch``, rebuilt alike from the seed on every call."""
        raise NotImplementedError

    def step(self, batch: Any) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the losses to log."""
        raise NotImplementedError

    def end_epoch(self, epoch: int) -> dict[str, float]:
        """After the last batch of ``epoch``; returns metrics to log (e.g. validation)."""
        return {}

    def stop_reason(self) -> str | None:
        """A reason to stop before the next epoch (e.g. "early_stopping"), else None."""
        return None

    def finish(self, run_dir: Path) -> bool:
        """After training; True if it changed the state (the newest checkpoint is rewritten)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: weights, optimisers, random streams, counters."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        raise NotImplementedError

    def plot(self, metrics_path: Path, out_png: Path) -> None:
        """Draw the run's metrics (the learning-dynamics plot)."""

    def planned_steps(self, per_epoch: int) -> int | None:
        """Steps the progress bar counts towards (None: unknown, e.g. early stopping)."""
        return self.config.epochs * per_epoch

    # ---- the loop ----------------------------------------------------------------------------
    def fit(
        self,
        *data: Any,
        resume: bool = False,
        max_minutes: float | Budget | None = None,
        progress: bool = True,
        stop_after_steps: int | None = None,
    ) -> TrainResult:
        """Train on the family's tensors, then the run folder: ``fit(*tensors, run_dir, ...)``.

        ``resume=True`` continues from the newest loadable checkpoint (or starts fresh if there
        is none) with the same data and settings (but ``resumable`` ones). ``max_minutes``
        is a wall-time budget from now, or a `Budget` already begun (`training.budget`);
        training stops cleanly after a step and checkpoints the exact position. Raises
        TrainingDiverged when a loss blows up.
        """
        budget = Budget.of(max_minutes)  # the clock starts before the data are prepared
        *tensors, run_dir = data
        single = contextlib.nullcontext(distributed.Context(device=self.device))
        group = distributed.process_group(self.device) if self.distributable else single
        with group as ctx:  # a distributable family in a torchrun job: every process trains
            self.ctx = ctx
            if ctx.distributed:
                self.device = ctx.device
            try:
                digest = self.prepare(*tensors)
                return self.run(
                    run_dir,
                    digest,
                    resume=resume,
                    max_minutes=budget,
                    progress=progress,
                    stop_after_steps=stop_after_steps,
                )
            finally:
                self.ddp = None  # the process group ends with this call

    def run(
        self,
        run_dir: str | Path,
        data_fingerprint: str,
        *,
        resume: bool = False,
        max_minutes: float | Budget | None = None,
        progress: bool = True,
        stop_after_steps: int | None = None,
    ) -> TrainResult:
        """Train into ``run_dir``; see the module docstring. Raises FileExistsError when
        ``run_dir`` holds a run and ``resume`` is False, TrainingDiverged on a blown-up loss."""
        budget = Budget.of(max_minutes)
        if self.device.type != "cpu":
            return self._run(
                Path(run_dir), data_fingerprint, resume, budget, progress, stop_after_steps
            )
        with cpu_threads(resolve_threads(self.threads, share=self.ctx.world)), keep_freed_memory():
            return self._run(
                Path(run_dir), data_fingerprint, resume, budget, progress, stop_after_steps
            )

    def _run(
        self,
        run_dir: Path,
        data_fingerprint: str,
        resume: bool,
        budget: Budget | None,
        progress: bool,
        stop_after_steps: int | None,
    ) -> TrainResult:
        ctx = self.ctx
        metrics_path = run_dir / METRICS_FILE
        if ctx.main:
            run_dir.mkdir(parents=True, exist_ok=True)
        pos = None
        if resume:  # rank 0 reads the checkpoint; every process resumes from it
            loaded = load_latest(run_dir) if ctx.main else None
            loaded = distributed.broadcast_object(loaded, ctx)
            if loaded is not None:
                path, saved = loaded
                pos = self._restore(path, saved, data_fingerprint)
            elif ctx.main:
                msg = f"{run_dir}: nothing to resume (no checkpoint): starting a new run"
                warnings.warn(msg, stacklevel=3)
            if ctx.main:
                truncate_metrics(metrics_path, pos.step if pos else 0)
        elif distributed.broadcast_object(ctx.main and holds_run(run_dir), ctx):
            raise FileExistsError(f"{run_dir} holds a run; pass resume=True or use a new run_dir")
        if ctx.main and self.before_training is not None:
            self.before_training()  # the run is this one's: the caller may write to the folder
        if pos is None:
            pos = Position()
            self.start()

        per_epoch = len(self.epoch_batches(pos.epoch))
        bar = Progress(
            self.planned_steps(per_epoch), pos.step, self.unit, not progress or not ctx.main
        )
        if budget is not None:
            bar.say(budget.set_up_line())
        done_here, stopped, ckpt = 0, None, None
        epoch, step = pos.epoch, pos.step
        with open(metrics_path if ctx.main else os.devnull, "a") as log, contextlib.closing(bar):
            while epoch < self.config.epochs and not stopped:
                stopped = self.stop_reason()
                if stopped:
                    break
                batches = self.epoch_batches(epoch)
                first = pos.batch if epoch == pos.epoch else 0
                for b in range(first, len(batches)):
                    t0 = time.perf_counter()
                    losses = self.step(batches[b])
                    step, done_here = step + 1, done_here + 1
                    self._guard(step, losses, run_dir)
                    row = {"step": step, "epoch": epoch, **losses}
                    took = time.perf_counter() - t0
                    log.write(json.dumps({**row, "seconds": took}) + "\n")
                    log.flush()
                    bar.stepped({k: f"{losses[k]:.3g}" for k in self.shown if k in losses})
                    if budget is not None:
                        budget.took("step", took)
                    closes = b + 1 == len(batches) - 1  # the next step closes the epoch
                    stopped = self._limit(budget, done_here, stop_after_steps, closes)
                    if stopped and b < len(batches) - 1:
                        ckpt = self._save(run_dir, Position(epoch, b + 1, step), data_fingerprint)
                        break
                else:
                    t0 = time.perf_counter()
                    ended = self.end_epoch(epoch)
                    epoch += 1
                    if ended:
                        row = {"step": step, "epoch": epoch, **ended}
                        log.write(json.dumps({**row, "seconds": time.perf_counter() - t0}) + "\n")
                        log.flush()
                    t1 = time.perf_counter()
                    ckpt = self._save(run_dir, Position(epoch, 0, step), data_fingerprint)
                    if budget is not None:
                        budget.took("epoch_end", t1 - t0)
                        budget.took("save", time.perf_counter() - t1)
                    bar.epoch_ended(epoch, self.config.epochs)
                    if not stopped:  # the end of an epoch counts against the budget too
                        stopped = self._limit(budget, None, None, len(batches) == 1)
            stopped = stopped or self.stop_reason()
        if self.finish(run_dir) and ckpt is not None:
            ckpt = self._save(run_dir, self._position, data_fingerprint)
        if ctx.main and metrics_path.exists() and metrics_path.stat().st_size:
            self.plot(metrics_path, run_dir / PLOT_FILE)
        return TrainResult(epoch, step, stopped, ckpt, getattr(self, "best_val", None))

    def _limit(
        self, budget: Budget | None, done: int | None, stop_after: int | None, epoch_end: bool
    ) -> str | None:
        """Why to stop now, if at all; rank 0's clock decides for every process."""
        reason = None
        if stop_after is not None and done is not None and done >= stop_after:
            reason = "stop_after_steps"
        elif budget is not None and budget.spent(epoch_end):
            reason = "max_minutes"
        return distributed.broadcast_object(reason, self.ctx)

    def _guard(self, step: int, losses: dict[str, float], run_dir: Path) -> None:
        limit = self.config.max_loss
        bad = [f"{k} = {losses[k]}" for k in self.guarded if not abs(losses[k]) <= limit]  # NaN
        if bad:
            raise TrainingDiverged(
                f"training diverged at step {step}: {', '.join(bad)} (allowed: finite, "
                f"|loss| <= {limit:g}); lower the learning rate or raise max_loss. "
                f"Last good checkpoint: {latest_checkpoint(run_dir)}"
            )

    def _save(self, run_dir: Path, pos: Position, data_fingerprint: str) -> Path:
        """Checkpoint the state at ``pos``; every process takes part, rank 0 writes."""
        state = self.state_dict()  # collective in a distributed run: called on every process
        self._position = pos
        path = checkpoint_path(run_dir, pos.step)
        if not self.ctx.main:
            return path
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "family": self.family,
                "epoch": pos.epoch,
                "batch": pos.batch,
                "step": pos.step,
                "settings": self.settings(),
                "fingerprint": data_fingerprint,
                "state": state,
            },
            path,
        )
        prune_checkpoints(run_dir)
        return path

    def _restore(self, path: Path, saved: dict[str, Any], data_fingerprint: str) -> Position:
        """Load a checkpoint of this run into the trainer; its position."""
        check_checkpoint(path, saved, self.family)
        old, new = saved["settings"], self.settings()
        keys = (old.keys() | new.keys()) - self.resumable
        changed = sorted(k for k in keys if old.get(k) != new.get(k))
        if changed:
            raise ValueError(f"settings differ from checkpoint {path} in {changed}")
        if saved["fingerprint"] != data_fingerprint:
            raise ValueError(f"checkpoint {path} was trained on other data")
        try:
            self.load_state_dict(saved["state"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this run: {e}") from e
        self._position = Position(saved["epoch"], saved["batch"], saved["step"])
        return self._position


def check_checkpoint(path: Path, saved: dict[str, Any], family: str) -> None:
    """A checkpoint of this release written by ``family``, or a ValueError saying what it is."""
    fmt = saved.get("format")
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(
            f"checkpoint {path} was written by an earlier healthgym (format {fmt!r}) and cannot "
            "be resumed by this release; sample from the run folder, or train a new run"
        )
    if saved.get("family") != family:
        raise ValueError(
            f"checkpoint {path} belongs to a {saved.get('family')!r} run, not {family!r}: "
            "resume it with the model that trained it"
        )


def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds a run's metrics or checkpoints."""
    return (run_dir / METRICS_FILE).exists() or bool(list_checkpoints(run_dir))


def truncate_metrics(path: Path, step: int) -> None:
    """Atomically drop metric rows past ``step`` (and a row torn by a crash)."""
    if not path.exists():
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] > step:
                    break
            except (json.JSONDecodeError, KeyError, TypeError):
                break
            keep.append(line if line.endswith("\n") else line + "\n")
    write_atomic(path, lambda tmp: tmp.write_text("".join(keep)))
