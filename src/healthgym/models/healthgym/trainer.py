"""Maximum-likelihood training of the default model, stopped on a validation loss.

A seeded tenth of the patients is held out. A fresh run first starts every head at its
marginal and fits the static model on its own; then each epoch passes over the training
patients, and after it the mean validation NLL (nats per patient) decides: better -> keep
these weights; `lr_patience` epochs without -> halve the learning rate; `patience` epochs
without -> stop. The best weights are what the run returns, which is also what keeps the
model from memorising patients. The run folder, resume, limits and checkpoints are the
shared loop's (`training.loop`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...training import distributed
from ...training.averaging import WeightAverage
from ...training.loop import Trainer, fingerprint
from ...training.plots import plot_likelihood_curve
from ...training.seeding import derive_seed
from .config import DROPOUT, HealthGymConfig
from .network import PatientModel, sequence_nll, static_nll
from .tokenizer import Tokenizer
from .warm_start import (
    start_at_marginals,
    start_at_transitions,
    token_counts,
    transition_features,
    transition_rows,
)

_INIT, _SPLIT, _EPOCH, _VAL, _STATICS, _TRANSITIONS = 0, 1, 2, 3, 4, 5
_RANK = 1000  # a process's own dropout stream in a distributed run
MIN_STEPS, MIN_BATCH = 20, 8  #: optimizer steps per epoch at least; smallest batch
STATIC_EVERY = 50  #: full-batch steps of the static model between validations
STATIC_MAX_STEPS = 1000  #: full-batch steps of the static model
#: validations of the static model without a better loss before its fit stops (chosen in
#: issue 18: docs/models/healthgym.md)
STATIC_PATIENCE = 3
#: training patients per static step at most: above it each step takes a seeded draw of this
#: many, since a full batch costs every patient per step (set-up time and memory grow with
#: the cohort: BENCHMARKS.md, the default model at scale); at or below it the full batch
STATIC_BATCH = 16_384
#: validation patients per piece of the static model's validation pass
STATIC_PIECE = 16_384
#: patients per validation pass: bounds the memory of the `LastValue` kernel's terms
VALIDATE_PIECE = 256


def build_model(tokens: Tokenizer, cfg: HealthGymConfig) -> PatientModel:
    """The seeded, untrained network for a fitted tokenizer's token columns."""
    private = cfg.dp_epsilon is not None
    ends = cfg.end == "drawn"
    actions = {v.name for v in tokens.schema.actions}
    treatments = sum(len(c.vocab) for c in tokens.dynamic_columns if c.name in actions)
    levels = tokens.static_coarse[:-1] + [False] if ends else tokens.static_coarse  # length
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, _INIT))
        return PatientModel(
            tokens.static_positions,
            tokens.dynamic_positions,
            tokens.dynamic_groups,
            tokens.max_length,
            cfg.width,
            DROPOUT if cfg.dropout is None else cfg.dropout,  # None: not decided by `fit`
            tokens.dynamic_scales if cfg.last_value else None,
            # levels are fitted to the data outside DP-SGD (`fit_levels`): none in DP runs
            levels if cfg.last_value and cfg.levels and not private else None,
            ends,
            treatments if cfg.direct_treatments else 0,
            cfg.skip,
        )


def batch_size(n_train: int, cfg: HealthGymConfig) -> int:
    """`cfg.batch_size`, smaller for small cohorts so that an epoch (the unit of validation,
    learning-rate halving and early stopping) has at least MIN_STEPS optimizer steps."""
    return max(MIN_BATCH, min(cfg.batch_size, n_train // MIN_STEPS))


def adamw(params: Any, cfg: HealthGymConfig) -> torch.optim.AdamW:
    """AdamW with the run's learning rate and weight decay; the fused kernel where torch has
    one (torch >= 2.4; on CPU 6x faster than the per-tensor loop, 6% of a training step)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def split_patients(n: int, cfg: HealthGymConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) patient indices; at least one patient in each."""
    perm = np.random.default_rng(derive_seed(cfg.seed, _SPLIT)).permutation(n)
    n_val = min(max(1, round(cfg.val_fraction * n)), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class HealthGymTrainer(Trainer):
    """Trains a `PatientModel` on token tensors; see the module docstring for the schedule."""

    family = "healthgym"
    distributable = True
    guarded = ("nll",)
    resumable = frozenset({"epochs", "device", "patience", "temperature"})
    shown = ("nll",)
    unit = "optimizer step"
    #: a --stream run (`fit(..., first=)`): this process holds the steps of patients
    #: first, first + 1, ... only; None: of every patient
    first: int | None = None
    #: the moving average of the sequence model's weights (`HealthGymConfig.average`), or None
    average: WeightAverage | None = None

    def __init__(self, tokens: Tokenizer, config: HealthGymConfig) -> None:
        self.config = config
        self.device = config.resolve_device()
        self.model = build_model(tokens, config).to(self.device)

    def fit(self, *data: Any, first: int | None = None, **options: Any) -> Any:
        """`Trainer.fit` on static (N, S), dynamic (N, T, D) tokens (any integer dtype) and
        lengths (N,). With `first` (a --stream run), dynamic holds only this process's own
        patients, `first` onwards, and each process computes the share of a batch it holds
        (resume then needs the same number of processes)."""
        self.first = first
        return super().fit(*data, **options)

    def prepare(self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> str:
        """Static (N, S), dynamic tokens and lengths (N,) (see `fit`); the model ends training
        holding the best validation weights."""
        if len(lengths) < 2:
            raise ValueError("training needs at least 2 patients (one is held out to validate)")
        cfg = self.config
        self.model.to(self.device)
        self.train_idx, self.val_idx = split_patients(len(lengths), cfg)
        self.data = [t.to(self.device) for t in (static, dynamic, lengths)]
        self.held = (self.first or 0, (self.first or 0) + len(dynamic))  # patients [from, to)
        self.batch = batch_size(len(self.train_idx), cfg)
        params = self.model.sequence.parameters()
        self.opt = adamw(params, cfg)
        self.counters: dict[str, Any] = {"best_val": math.inf, "bad": 0, "lr": cfg.lr}
        self.counters |= {"static_val": math.nan, "loss_sum": 0.0, "patients": 0}
        self.best = copy.deepcopy(self.model.state_dict())
        self.average = WeightAverage(self.model.sequence, cfg.average) if cfg.average else None
        self.dropout_rng: list[torch.Tensor] | None = None
        self.validated = True  # the model's weights have been validated (or are the start)
        if self.ctx.distributed:
            self.ddp = distributed.wrap(self.model.sequence, self.ctx)
        digest = fingerprint(static, dynamic, lengths)
        if self.first is not None and self.ctx.distributed:  # every process's part, in order
            digests = "".join(distributed.gather_objects(digest, self.ctx))
            digest = hashlib.sha256(digests.encode()).hexdigest()
        return digest

    @property
    def network(self) -> PatientModel:
        return self.model

    # ---- the loop's hooks --------------------------------------------------------------------
    def start(self) -> None:
        self._start_at_marginals()
        # Rank 0 alone fits the statics (each process holds every patient's); the others
        # take its weights and validation loss.
        static_val = self._fit_statics() if self.ctx.rank == 0 else None
        self.counters["static_val"] = distributed.broadcast_object(static_val, self.ctx)
        distributed.broadcast_module(self.model, self.ctx)
        self.best = copy.deepcopy(self.model.state_dict())
        if self.average is not None:  # the average starts at the fitted start
            self.average.reset()

    def epoch_batches(self, epoch: int) -> list[tuple[int, int, np.ndarray]]:
        """(epoch, index, patient ids) per batch: the training patients shuffled by epoch."""
        seed = derive_seed(self.config.seed, _EPOCH, epoch)
        order = self.train_idx[np.random.default_rng(seed).permutation(len(self.train_idx))]
        starts = range(0, len(order), self.batch)
        return [(epoch, b, order[s : s + self.batch]) for b, s in enumerate(starts)]

    def step(self, batch: tuple[int, int, np.ndarray]) -> dict[str, float]:
        """One step on a global batch; distributed, each process takes every W-th patient
        and the loss is scaled so DDP's averaged gradient is the whole batch's."""
        epoch, index, ids = batch
        ctx = self.ctx
        self.model.train()
        with self._dropout_stream(epoch, fresh=index == 0):
            if ctx.distributed:
                loss, value = self._share_nll(ids)
            else:
                loss = self._nll(torch.from_numpy(ids).to(self.device)).mean()
                value = loss.item()
            if math.isfinite(value):  # else the loop's guard stops the run, weights untouched
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.sequence.parameters(), 1.0)
                self.opt.step()
                if self.average is not None:
                    self.average.update()
        self.counters["loss_sum"] += value * len(ids)
        self.counters["patients"] += len(ids)
        self.validated = False
        return {"nll": value}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        c, cfg = self.counters, self.config
        with self._averaged():
            val = self._validate()
            if better := val < c["best_val"]:
                c["best_val"], c["bad"] = val, 0
                self.best = copy.deepcopy(self.model.state_dict())
        self.validated = True
        if not better:
            c["bad"] += 1
            if c["bad"] % cfg.lr_patience == 0:
                c["lr"] /= 2
                for group in self.opt.param_groups:
                    group["lr"] = c["lr"]
        train = c["loss_sum"] / max(c["patients"], 1)
        c["loss_sum"], c["patients"] = 0.0, 0
        return {
            "train_nll": train,
            "val_nll": val,
            "lr": c["lr"],
            "static_val_nll": c["static_val"],
        }

    def stop_reason(self) -> str | None:
        return "early_stopping" if self.counters["bad"] >= self.config.patience else None

    def finish(self, run_dir: Path) -> bool:
        """The model takes the best weights; after a stop mid-epoch, the current weights
        where they validate better (the checkpoint keeps the training state as it was)."""
        best, best_val = self.best, self.counters["best_val"]
        with self._averaged():
            if not self.validated and (val := self._validate()) < best_val:
                best, best_val = copy.deepcopy(self.model.state_dict()), val
        self.model.load_state_dict(best)
        self.model.eval()
        self.best_val = best_val
        return False

    def planned_steps(self, per_epoch: int) -> int | None:
        return None  # early stopping decides

    def plot(self, metrics_path: Path, out_png: Path) -> None:
        plot_likelihood_curve(metrics_path, out_png)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "best": self.best,
            "optimizer": self.opt.state_dict(),
            "counters": dict(self.counters),
            "average": None if self.average is None else self.average.state_dict(),
            # distributed: every process's dropout stream, by rank (collective)
            "dropout_rng": distributed.gather_objects(self.dropout_rng, self.ctx)
            if self.ctx.distributed
            else self.dropout_rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.counters = dict(state["counters"])
        for group in self.opt.param_groups:
            group["lr"] = self.counters["lr"]
        self.best = state["best"]
        if self.average is not None:
            self.average.load_state_dict(state["average"])
        saved = state["dropout_rng"]
        if self.ctx.distributed:  # this process's stream, if the run had as many processes
            fits = isinstance(saved, list) and len(saved) == self.ctx.world
            saved = saved[self.ctx.rank] if fits else None
        self.dropout_rng = saved
        self.validated = self.counters["patients"] == 0  # stopped between epochs

    # ---- the family's own --------------------------------------------------------------------
    @contextlib.contextmanager
    def _dropout_stream(self, epoch: int, fresh: bool) -> Iterator[None]:
        """Dropout draws from torch's global generator: each epoch's stream starts at the
        epoch's seed and continues from step to step (saved in checkpoints, so a run resumed
        mid-epoch draws the same masks); the caller's global RNG is left as it was."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            if fresh or self.dropout_rng is None:
                keys = (self.config.seed, _EPOCH, epoch)
                rank = (_RANK, self.ctx.rank) if self.ctx.distributed else ()
                torch.manual_seed(derive_seed(*keys, *rank))
            else:
                torch.set_rng_state(self.dropout_rng[0])
                if cuda:
                    torch.cuda.set_rng_state(self.dropout_rng[1], self.device)
            yield
            self.dropout_rng = [torch.get_rng_state()]
            if cuda:
                self.dropout_rng.append(torch.cuda.get_rng_state(self.device))

    def _averaged(self) -> contextlib.AbstractContextManager[None]:
        """The model holds the weight average inside the block (`HealthGymConfig.average`)."""
        return contextlib.nullcontext() if self.average is None else self.average.applied()

    def _held(self, ids: np.ndarray) -> np.ndarray:
        """The patients of `ids` whose steps this process holds (all but in a --stream run)."""
        return ids[(ids >= self.held[0]) & (ids < self.held[1])]

    def _mine(self, ids: np.ndarray) -> np.ndarray:
        """This process's share of `ids`: every W-th, or in a --stream run those it holds."""
        if not self.ctx.distributed:
            return ids
        return self._held(ids) if self.first is not None else ids[self.ctx.rank :: self.ctx.world]

    def _steps(self, ids: torch.Tensor) -> torch.Tensor:
        """Dynamic tokens (B, T, D) of held patients `ids`, as stored."""
        return self.data[1][ids - self.held[0]]

    def _nll(self, ids: torch.Tensor, net: torch.nn.Module | None = None) -> torch.Tensor:
        """(B,) NLL of the patients' steps and lengths given their statics."""
        static, lengths = self.data[0][ids].long(), self.data[2][ids]
        t_max = int(lengths.max())
        dynamic = self._steps(ids)[:, :t_max].long()
        return sequence_nll(net or self.model.sequence, static, dynamic, lengths)

    def _share_nll(self, ids: np.ndarray) -> tuple[torch.Tensor, float]:
        """This process's share of a global batch: (its loss, the batch's mean NLL)."""
        ctx = self.ctx
        mine = torch.from_numpy(self._mine(ids)).to(self.device)
        if len(mine):
            total = self._nll(mine, self.ddp).sum()
        else:  # a short last batch: no patient here, but DDP still needs every gradient
            total = sum(p.sum() for p in self.ddp.parameters()) * 0.0
        loss = total * ctx.world / len(ids)  # DDP averages over W: the whole batch's mean
        value = distributed.all_reduce(total.detach(), ctx).item() / len(ids)
        return loss, value

    def _start_at_marginals(self) -> None:
        """Heads at the training marginals, then (`last_value`) at the training transitions.
        The steps are read 1,024 patients at a time; in a --stream run each process counts
        and reads its own and the counts and rows are shared."""
        ctx, seq, device = self.ctx, self.model.sequence, self.device
        shared = self.first is not None and ctx.distributed
        train = torch.from_numpy(self.train_idx).to(device)
        start_at_marginals(
            self.model.statics.heads, token_counts(self.model.statics.heads, self.data[0][train])
        )
        counts = torch.zeros(sum(h.free.out_features for h in seq.heads), dtype=torch.int64)
        held = self._held(self.train_idx)
        for at in range(0, len(held), 1024):
            ids = torch.from_numpy(held[at : at + 1024]).to(device)
            steps, lengths = self._steps(ids), self.data[2][ids]
            live = torch.arange(steps.shape[1], device=device) < lengths[:, None]
            counts += token_counts(seq.heads, steps[live]).cpu()
        start_at_marginals(seq.heads, distributed.all_reduce(counts, ctx) if shared else counts)
        if seq.last is None:
            return
        # ... and values persist as the data's do: rows drawn over every training patient
        rng = torch.Generator(device).manual_seed(derive_seed(self.config.seed, _TRANSITIONS))
        rows = transition_rows(self.data[2][train], rng)
        patients = train[rows[:, 0]]
        here = (patients >= self.held[0]) & (patients < self.held[1])
        who, at = patients[here].unique(return_inverse=True)
        steps = self._steps(who)[:, : int(self.data[2][train].max())]
        static = self.data[0][who]
        found = transition_features(seq.last, static, steps, torch.stack([at, rows[here, 1]], 1))
        if shared:  # every process's rows, put back in the order they were drawn
            parts = distributed.gather_objects((here.cpu(), [f.cpu() for f in found]), ctx)
            found = tuple(torch.empty((len(rows), *f.shape[1:]), dtype=f.dtype) for f in found)
            for mask, part in parts:
                for f, p in zip(found, part, strict=True):
                    f[mask] = p
            found = tuple(f.to(device) for f in found)
        start_at_transitions(seq, found)

    def _fit_statics(self) -> float:
        """Fit the static model on its own first: a few tokens per patient give it far less
        signal per batch than the steps give the sequence model, so it takes its own
        full-batch steps (fresh orders each step, learning rate decaying to 0 over
        STATIC_MAX_STEPS, validated every STATIC_EVERY steps, the best kept, stopped after
        STATIC_PATIENCE validations without a better loss). Above STATIC_BATCH training
        patients a step takes a fresh seeded draw of that many; validation passes take
        STATIC_PIECE patients at a time.
        Returns the best validation NLL of the statics (nats per patient)."""
        cfg, model, static = self.config, self.model.statics, self.data[0]
        opt = adamw(model.parameters(), cfg)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STATIC_MAX_STEPS)
        rng = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, _STATICS))
        val = static[torch.from_numpy(self.val_idx).to(self.device)].split(STATIC_PIECE)
        everyone = static[torch.from_numpy(self.train_idx).to(self.device)]
        draws = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, _STATICS, 1))
        best_val, best, bad = math.inf, copy.deepcopy(model.state_dict()), 0
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            torch.manual_seed(derive_seed(cfg.seed, _STATICS))  # dropout
            for step in range(1, STATIC_MAX_STEPS + 1):
                model.train()
                opt.zero_grad(set_to_none=True)
                batch = everyone
                if len(everyone) > STATIC_BATCH:
                    pick = torch.randperm(len(everyone), generator=draws, device=self.device)
                    batch = everyone[pick[:STATIC_BATCH]]
                static_nll(model, batch.long(), rng).mean().backward()
                opt.step()
                sched.step()
                if step % STATIC_EVERY:
                    continue
                model.eval()
                val_rng = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, _VAL))
                with torch.no_grad():  # every order, averaged over a few fixed mask draws
                    v = np.mean([self._static_val(val, val_rng) for _ in range(4)])
                if v < best_val:
                    best_val, best, bad = v, copy.deepcopy(model.state_dict()), 0
                elif (bad := bad + 1) >= STATIC_PATIENCE:
                    break
        model.load_state_dict(best)
        return float(best_val)

    def _static_val(self, pieces: tuple[torch.Tensor, ...], rng: torch.Generator) -> float:
        """Mean static NLL of the validation patients, `pieces` of their static tokens."""
        nll = [static_nll(self.model.statics, p.long(), rng) for p in pieces]
        return torch.cat(nll).mean().item()

    @torch.no_grad()
    def _validate(self) -> float:
        """Mean validation NLL per patient (distributed: each process takes every W-th
        patient and the sum is shared, so every process decides alike)."""
        self.model.eval()
        ctx, total = self.ctx, 0.0
        mine = self._mine(self.val_idx)
        for start in range(0, len(mine), VALIDATE_PIECE):
            ids = torch.from_numpy(mine[start : start + VALIDATE_PIECE]).to(self.device)
            total += self._nll(ids).sum().item()
        if ctx.distributed:
            total = distributed.all_reduce(torch.tensor(total, dtype=torch.float64), ctx).item()
        return total / len(self.val_idx)
