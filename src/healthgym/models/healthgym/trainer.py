"""Maximum-likelihood training of the default model, stopped on a validation loss.

A seeded tenth of the patients is held out; after each epoch the mean validation NLL (nats
per patient) decides: better -> keep these weights; `lr_patience` epochs without -> halve the
learning rate; `patience` epochs without -> stop. The best weights are what the run
returns, which is also what keeps the model from memorising patients. Checkpoints (every
epoch, atomic) let `resume=True` continue from the last completed epoch; `max_minutes`
stops at a batch boundary.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.autoregressive import PatientModel, sequence_nll, start_at_marginals, static_nll
from ..tokenizer import Tokenizer
from .ar_config import ARConfig
from .checkpoint import (
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)
from .plots import plot_likelihood_curve
from .runtime import cpu_threads, keep_freed_memory, resolve_threads
from .trainer import METRICS_FILE, PLOT_FILE, TrainingDiverged, TrainResult, derive_seed

CHECKPOINT_FORMAT = "healthgym-ar-1"
CHECKPOINT_KEYS = ("format", "model", "best", "optimizer", "state", "config", "fingerprint")
#: Config fields a resumed run may change.
RESUMABLE_CHANGES = frozenset({"epochs", "device", "patience", "temperature"})
_INIT, _SPLIT, _EPOCH, _VAL, _STATICS = 0, 1, 2, 3, 4
MIN_STEPS, MIN_BATCH = 20, 8  #: optimizer steps per epoch at least; smallest batch
STATIC_EVERY = 50  #: full-batch steps of the static model between validations
STATIC_MAX_STEPS = 1000  #: full-batch steps of the static model


def build_model(tokens: Tokenizer, cfg: ARConfig) -> PatientModel:
    """The seeded, untrained network for a fitted tokenizer's token columns."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, _INIT))
        return PatientModel(
            tokens.static_positions,
            tokens.dynamic_positions,
            tokens.dynamic_groups,
            tokens.max_length,
            cfg.width,
            cfg.dropout,
        )


def batch_size(n_train: int, cfg: ARConfig) -> int:
    """`cfg.batch_size`, smaller for small cohorts so that an epoch (the unit of validation,
    learning-rate halving and early stopping) has at least MIN_STEPS optimizer steps."""
    return max(MIN_BATCH, min(cfg.batch_size, n_train // MIN_STEPS))


def split_patients(n: int, cfg: ARConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) patient indices; at least one patient in each."""
    perm = np.random.default_rng(derive_seed(cfg.seed, _SPLIT)).permutation(n)
    n_val = min(max(1, round(cfg.val_fraction * n)), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class LikelihoodTrainer:
    """Trains a `PatientModel` on token tensors; see the module docstring for the schedule."""

    def __init__(self, tokens: Tokenizer, config: ARConfig) -> None:
        self.config = config
        self.device = config.resolve_device()
        self.model = build_model(tokens, config).to(self.device)
        self.threads: int | str | None = None

    def fit(
        self,
        static: torch.Tensor,
        dynamic: torch.Tensor,
        lengths: torch.Tensor,
        run_dir: str | Path,
        *,
        resume: bool = False,
        max_minutes: float | None = None,
        progress: bool = True,
    ) -> TrainResult:
        """Train on static (N, S), dynamic (N, T, D) tokens and lengths (N,); the model ends
        holding the best validation weights."""
        if len(lengths) < 2:
            raise ValueError("training needs at least 2 patients (one is held out to validate)")
        if self.device.type != "cpu":
            return self._fit(static, dynamic, lengths, Path(run_dir), resume, max_minutes, progress)
        with cpu_threads(resolve_threads(self.threads)), keep_freed_memory():
            return self._fit(static, dynamic, lengths, Path(run_dir), resume, max_minutes, progress)

    def _fit(
        self,
        static: torch.Tensor,
        dynamic: torch.Tensor,
        lengths: torch.Tensor,
        run_dir: Path,
        resume: bool,
        max_minutes: float | None,
        progress: bool,
    ) -> TrainResult:
        cfg = self.config
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = run_dir / METRICS_FILE
        fingerprint = _fingerprint(static, dynamic, lengths)
        params = self.model.sequence.parameters()
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        state = {"epoch": 0, "step": 0, "best_val": math.inf, "bad": 0, "lr": cfg.lr}
        state["static_val"] = math.nan
        best = copy.deepcopy(self.model.state_dict())
        if resume:
            loaded = load_latest(run_dir, required=CHECKPOINT_KEYS)
            if loaded is not None:
                state, best = self._restore(*loaded, opt, fingerprint)
        elif metrics_path.exists() or list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} holds a run; pass resume=True or use a new run_dir")
        train_idx, val_idx = split_patients(len(lengths), cfg)
        data = [t.to(self.device) for t in (static, dynamic, lengths)]
        if state["epoch"] == 0:
            self._start_at_marginals(data, train_idx)
            state["static_val"] = self._fit_statics(data[0], train_idx, val_idx)
            best = copy.deepcopy(self.model.state_dict())
        per_epoch = math.ceil(len(train_idx) / batch_size(len(train_idx), cfg))
        started, stopped, ckpt = time.monotonic(), None, None
        bar = tqdm(total=cfg.epochs, initial=state["epoch"], disable=not progress, unit="epoch")
        with open(metrics_path, "a") as log, bar:
            while state["epoch"] < cfg.epochs and state["bad"] < cfg.patience:
                t0 = time.perf_counter()
                loss, done = self._epoch(data, train_idx, opt, state, started, max_minutes)
                state["step"] += done
                if done < per_epoch:
                    stopped = "max_minutes"
                val = self._validate(data, val_idx)
                improved = val < state["best_val"]
                if improved:
                    state["best_val"], state["bad"] = val, 0
                    best = copy.deepcopy(self.model.state_dict())
                else:
                    state["bad"] += 1
                    if state["bad"] % cfg.lr_patience == 0:
                        state["lr"] /= 2
                        for group in opt.param_groups:
                            group["lr"] = state["lr"]
                if stopped:
                    break
                state["epoch"] += 1
                row = {"epoch": state["epoch"], "step": state["step"], "train_nll": loss}
                row |= {"val_nll": val, "lr": state["lr"], "seconds": time.perf_counter() - t0}
                row["static_val_nll"] = state["static_val"]
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.update()
                bar.set_postfix(
                    train=f"{loss:.2f}", val=f"{val:.2f}", best=f"{state['best_val']:.2f}"
                )
                ckpt = self._save(run_dir, opt, state, best, fingerprint)
                if max_minutes is not None and time.monotonic() - started >= 60 * max_minutes:
                    stopped = "max_minutes"
                    break
        self.model.load_state_dict(best)
        self.model.eval()
        if metrics_path.stat().st_size:
            plot_likelihood_curve(metrics_path, run_dir / PLOT_FILE)
        if stopped is None and state["bad"] >= cfg.patience:
            stopped = "early_stopping"
        self.best_val = state["best_val"]
        return TrainResult(state["epoch"], state["step"], stopped, ckpt)

    def _epoch(
        self,
        data: list[torch.Tensor],
        train_idx: np.ndarray,
        opt: torch.optim.Optimizer,
        state: dict[str, Any],
        started: float,
        max_minutes: float | None,
    ) -> tuple[float, int]:
        """One pass over the training patients -> (mean NLL per patient, batches done)."""
        cfg, model = self.config, self.model
        seed = derive_seed(cfg.seed, _EPOCH, state["epoch"])
        order = train_idx[np.random.default_rng(seed).permutation(len(train_idx))]
        rng = torch.Generator(self.device).manual_seed(seed)
        model.train()
        total, count, done = 0.0, 0, 0
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            torch.manual_seed(seed)  # dropout
            size = batch_size(len(train_idx), cfg)
            for start in range(0, len(order), size):
                if max_minutes is not None and time.monotonic() - started >= 60 * max_minutes:
                    break
                ids = torch.from_numpy(order[start : start + size]).to(self.device)
                nll = self._nll(data, ids, rng).mean()
                if not abs(nll.item()) <= cfg.max_loss:
                    raise TrainingDiverged(
                        f"training diverged at epoch {state['epoch']}: NLL {nll.item()} "
                        f"(allowed: finite, <= {cfg.max_loss:g}); lower lr"
                    )
                opt.zero_grad(set_to_none=True)
                nll.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                total, count, done = total + nll.item() * len(ids), count + len(ids), done + 1
        return total / max(count, 1), done

    def _nll(self, data: list[torch.Tensor], ids: torch.Tensor, rng: torch.Generator):
        """(B,) NLL of the patients' steps and lengths given their statics."""
        static, dynamic, lengths = (t[ids] for t in data)
        t_max = int(lengths.max())
        return sequence_nll(self.model.sequence, static, dynamic[:, :t_max], lengths)

    def _start_at_marginals(self, data: list[torch.Tensor], train_idx: np.ndarray) -> None:
        static, dynamic, lengths = (t[torch.from_numpy(train_idx).to(self.device)] for t in data)
        start_at_marginals(self.model.statics.heads, static)
        live = torch.arange(dynamic.shape[1], device=self.device) < lengths[:, None]
        start_at_marginals(self.model.sequence.heads, dynamic[live])

    def _fit_statics(self, static: torch.Tensor, train_idx: np.ndarray, val_idx: np.ndarray):
        """Fit the static model on its own first: a few tokens per patient give it far less
        signal per batch than the steps give the sequence model, so it takes its own
        full-batch steps (fresh orders each step, learning rate decaying to 0 over
        STATIC_MAX_STEPS, validated every STATIC_EVERY steps, the best kept).
        Returns the best validation NLL of the statics (nats per patient)."""
        cfg, model = self.config, self.model.statics
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STATIC_MAX_STEPS)
        rng = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, _STATICS))
        val = static[torch.from_numpy(val_idx).to(self.device)]
        train = static[torch.from_numpy(train_idx).to(self.device)]
        best_val, best, bad = math.inf, copy.deepcopy(model.state_dict()), 0
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            torch.manual_seed(derive_seed(cfg.seed, _STATICS))  # dropout
            for step in range(1, STATIC_MAX_STEPS + 1):
                model.train()
                loss = static_nll(model, train, rng).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if step % STATIC_EVERY:
                    continue
                model.eval()
                val_rng = torch.Generator(self.device).manual_seed(derive_seed(cfg.seed, _VAL))
                with torch.no_grad():  # every order, averaged over a few fixed mask draws
                    v = np.mean([static_nll(model, val, val_rng).mean().item() for _ in range(4)])
                if v < best_val:
                    best_val, best, bad = v, copy.deepcopy(model.state_dict()), 0
                elif (bad := bad + 1) >= cfg.patience:
                    break
        model.load_state_dict(best)
        return float(best_val)

    @torch.no_grad()
    def _validate(self, data: list[torch.Tensor], val_idx: np.ndarray) -> float:
        """Mean validation NLL per patient (fixed masks, so epochs compare)."""
        self.model.eval()
        rng = torch.Generator(self.device).manual_seed(derive_seed(self.config.seed, _VAL))
        total = 0.0
        for start in range(0, len(val_idx), 1024):
            ids = torch.from_numpy(val_idx[start : start + 1024]).to(self.device)
            total += self._nll(data, ids, rng).sum().item()
        return total / len(val_idx)

    def _save(
        self,
        run_dir: Path,
        opt: torch.optim.Optimizer,
        state: dict[str, Any],
        best: dict[str, torch.Tensor],
        fingerprint: str,
    ) -> Path:
        path = checkpoint_path(run_dir, state["epoch"])
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "model": self.model.state_dict(),
                "best": best,
                "optimizer": opt.state_dict(),
                "state": dict(state),
                "config": self.config.to_dict(),
                "fingerprint": fingerprint,
            },
            path,
        )
        prune_checkpoints(run_dir)
        return path

    def _restore(
        self,
        path: Path,
        saved: dict[str, Any],
        opt: torch.optim.Optimizer,
        fingerprint: str,
    ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        if saved["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {saved['format']}")
        old, new = saved["config"], self.config.to_dict()
        changed = sorted(
            k for k in (old.keys() | new.keys()) - RESUMABLE_CHANGES if old.get(k) != new.get(k)
        )
        if changed:
            raise ValueError(f"config differs from checkpoint {path} in {changed}")
        if saved["fingerprint"] != fingerprint:
            raise ValueError(f"checkpoint {path} was trained on other data")
        try:
            self.model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this model: {e}") from None
        state = dict(saved["state"])
        for group in opt.param_groups:
            group["lr"] = state["lr"]
        return state, saved["best"]


def _fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
