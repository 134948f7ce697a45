"""A private run of `HealthGym.fit`: its tokenizer and trainer, and model.json's "privacy"
block stating the guarantee, what it covers and what it does not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ....data.cohort import Cohort
from ....training import run_folder
from ..config import HealthGymConfig
from ..tokenizer import Tokenizer
from . import sgd
from .accountant import ACCOUNTANT, DELTA_FACTOR, Plan, epsilon_of
from .sgd import PrivateTrainer
from .tokenizer import cut_stays, fit_tokenizer

COVERED = [
    "every patient's steps, missingness and stay length, and its statics: DP-SGD on the "
    "sequence and static models (per-patient clipping, Gaussian noise, Poisson sampling)",
    "the tokenizer: real variables' quantile bins and decoding grid, their ranges where the "
    "schema declares no min/max (values outside are clipped), their decimals, the longest "
    "stay (longer stays are cut) and the time origin: Gaussian histograms",
    "no validation split or early stopping on real patients, no heads started at the real "
    "marginals: removed in DP mode",
]
NOT_COVERED = [
    "the schema (variables, kinds, levels, missing flags, declared min/max and constraints) "
    "is public input: a schema inferred from this data reveals its levels and ranges; write "
    "it without the data, or review it",
    "the number of training patients N is public (it sets the sampling rate and the default delta)",
    "metrics.jsonl and learning_dynamics.png (training losses of real patients per batch) and "
    "checkpoints/ (a hash of the training data): keep them private; release the synthetic "
    "data, or weights.pt with model.json, tokenizer.json and schema.yaml",
    "Gaussian noise is drawn in floating point by torch's generator (not a secure RNG; "
    "attacks on floating-point noise are not mitigated)",
    "settings chosen by looking at results on this data spend privacy that is not counted",
]


class PrivateRun:
    """What `HealthGym.fit` does differently in DP mode (`model.py` calls these hooks)."""

    def __init__(self, config: HealthGymConfig, run_dir: Path, resume: bool) -> None:
        self.config, self.run_dir, self.resume = config, run_dir, resume
        self.plan: Plan | None = None
        self.tokenizer_info: dict[str, Any] = {}
        self.trainer: PrivateTrainer | None = None

    def fit_tokenizer(self, cohort: Cohort) -> Tokenizer:
        """A resumed run's own tokenizer (released once), else a new DP fit."""
        cfg = self.config
        self.plan = Plan.make(cfg, len(cohort.ids))
        saved = self._saved_block()
        if saved is not None:
            self.tokenizer_info = saved.get("tokenizer", {})
            return Tokenizer.load(self.run_dir / run_folder.TOKENIZER_FILE)
        rng = np.random.default_rng(sgd.noise_seed())
        tok, self.tokenizer_info = fit_tokenizer(cohort, cfg.bins, cfg.fine, self.plan, rng)
        return tok

    def trainer_and_data(self, cohort: Cohort, tokenizer: Tokenizer) -> Any:
        stays = cut_stays(cohort, tokenizer.max_length)
        tokens = tokenizer.transform(stays, seed=self.config.seed, hold=self.config.last_value)
        data = (tokens.static, tokens.dynamic, tokens.lengths)
        marginals = self.tokenizer_info.get("marginals")
        self.trainer = PrivateTrainer(tokenizer, self.config, self.plan, marginals)
        return self.trainer, tuple(torch.from_numpy(a) for a in data), {}

    def block(self, stopped: str | None = None, finished: bool = False) -> dict[str, Any]:
        """model.json's "privacy": what the guarantee is and what it covers. Before training
        ends (``finished`` False) epsilon_spent and steps are unknown (at most the budget)."""
        import opacus

        plan = self.plan
        trainer = self.trainer if finished else None
        steps = None if trainer is None else trainer.counters["steps"]
        spent = None if trainer is None else trainer.epsilon_spent()
        if not finished:
            status = "training: epsilon_spent is at most epsilon until the run ends"
        elif stopped == "privacy_budget":
            status = "finished: the planned steps are taken"
        else:
            status = f"stopped ({stopped or 'epochs'}); a resumed run stays within epsilon"
        return {
            "mechanism": "DP-SGD (Poisson sampling, per-patient clipping, Gaussian noise) and "
            "Gaussian histograms (tokenizer)",
            "unit": "patient (all of a patient's rows); neighbouring cohorts add or remove one",
            "status": status,
            "epsilon": plan.epsilon,
            "epsilon_spent": spent,
            "delta": plan.delta,
            "delta_rule": f"{DELTA_FACTOR:g} / N (default)" if plan.delta_default else "given",
            "accountant": ACCOUNTANT,
            "opacus": opacus.__version__,
            "max_grad_norm": plan.max_grad_norm,
            "clipping": "per part (static model, sequence model), each to max_grad_norm; noise "
            "SD noise_multiplier * max_grad_norm * sqrt(2) on each",
            "noise_multiplier": plan.noise_multiplier,
            "sample_rate": plan.sample_rate,
            "expected_batch_size": plan.sample_rate * plan.patients,
            "patients": plan.patients,
            "steps": steps,
            "planned_steps": plan.steps,
            "epochs": plan.epochs,
            "tokenizer": {
                "epsilon_share": plan.tokenizer_share,
                "epsilon_alone": epsilon_of(plan.start, plan.delta),
                **self.tokenizer_info,
            },
            "covered": COVERED,
            "not_covered": NOT_COVERED,
        }

    def _saved_block(self) -> dict[str, Any] | None:
        """The privacy block of the run being resumed (its tokenizer was released already)."""
        if not self.resume or not (self.run_dir / run_folder.TOKENIZER_FILE).is_file():
            return None
        return run_folder.read_privacy(self.run_dir) or None


def fit_private(
    model: Any, fit: Callable[..., Any], cohort: Cohort, run_dir: Path, resume: bool, *args: Any
) -> Any:
    """`HealthGym._fit` in DP mode: ``fit`` (the shared one) with this module's tokenizer and
    trainer, then model.json's privacy block rewritten with what the run spent."""
    from ....training import distributed

    if distributed.env_world_size() > 1:  # one process: one noise stream, one accountant
        raise ValueError("differentially private training runs in one process, not torchrun")
    run = PrivateRun(model.config, Path(run_dir), resume)
    model._private = run
    try:
        fit(cohort, run_dir, resume, *args)
    finally:
        model._private = None
    model.privacy = run.block(model.result.stopped_early, finished=True)
    model._write_metadata(Path(run_dir))
    return model


def summary_line(block: dict[str, Any]) -> str:
    """One line stating the guarantee of a run's privacy block."""
    spent = block.get("epsilon_spent")
    eps = f"{spent:.3g}" if isinstance(spent, int | float) else f"<= {block.get('epsilon')}"
    return (
        f"({eps}, {block.get('delta', float('nan')):.3g})-differentially private per patient "
        f"({block.get('accountant', '?').split(' ')[0]} accountant; noise multiplier "
        f"{block.get('noise_multiplier', float('nan')):.3g}, clipping norm "
        f"{block.get('max_grad_norm')}, {block.get('steps')} steps at sample rate "
        f"{block.get('sample_rate', float('nan')):.3g})"
    )
