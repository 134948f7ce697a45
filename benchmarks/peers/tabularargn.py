"""MOSTLY AI's TabularARGN (`mostlyai-engine`), the two-table set-up its docs describe for
sequences: a flat model of the static table (one row per patient), and a sequential model of
the dynamic rows with the static table as its context (`tgt_context_key` = patient id).
Sampling draws `n` static rows from the flat model, then one sequence per row from the
sequential model; the sequence length is the model's own.

Data as the library takes it: reals as floats with NaN (it models missingness itself),
binary/categorical variables as strings (missing as NaN, a category of its own); encoding
types are given, not inferred. Library defaults otherwise (model `MOSTLY_AI/Medium`, value
protection on, validation split 80/20 with early stopping, its learning-rate schedule),
except `max_epochs`, raised so that the clock or early stopping ends training; categories
that value protection hid as rare are sampled from the others at generation
(`rare_category_replacement_method="sample"`), so every cell is a real level.

Budget: the engine's functional steps (split, analyze, encode, train, generate), timed
together; `train(max_training_time=...)`, the library's own limit (checked after every
step), gets at most `FLAT_SHARE` of the budget for the flat model (early stopping usually ends
it sooner) and, for the sequential model, whatever the budget has left once its data are
split, analysed and encoded.

Differential privacy (`dp_epsilon`, `dp_delta`; `benchmarks.privacy_utility --peer`): both
models read every patient, so each gets half of epsilon and delta (sequential composition),
and within a model the analysis' value protection takes `DP_ANALYSIS_SHARE` of it (the share
healthgym's DP tokenizer takes by default) and DP-SGD the rest (`max_epsilon`, the engine's
stop); the sequential model's privacy unit is the context key, a patient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from healthgym import Cohort

from .common import Adapter, Budget, Fill, peer_tables, to_cohort

FLAT_SHARE = 0.2
MAX_EPOCHS = 1e6
DP_ANALYSIS_SHARE = 0.3


def _encoding(variables: Any) -> dict[str, str]:
    return {
        v.name: "TABULAR_NUMERIC_AUTO" if v.kind == "real" else "TABULAR_CATEGORICAL"
        for v in variables
    }


class TabularARGNAdapter(Adapter):
    def __init__(
        self,
        run_dir: str | Path | None = None,
        seed: int = 0,
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
    ) -> None:
        super().__init__(name="tabularargn", library="mostlyai-engine")
        self.ws = Path(run_dir or "runs/peers/_tabularargn")
        self.seed = seed
        self.dp_epsilon, self.dp_delta = dp_epsilon, dp_delta
        self.settings = {
            "model": "MOSTLY_AI/Medium (default)",
            "max_epochs": MAX_EPOCHS,
            "flat_share": FLAT_SHARE,
            "device": "cpu",
            "rare_category_replacement_method": "sample",
        }

    def fit(self, train: Cohort, minutes: float) -> TabularARGNAdapter:
        from mostlyai import engine

        budget = Budget(minutes)
        schema = train.schema
        self.schema, self.fill, self.key = schema, Fill.of(train), schema.id
        statics, dynamics = peer_tables(train)
        engine.set_random_state(self.seed)
        flat, seq = self.ws / "flat", self.ws / "sequential"
        engine.split(
            tgt_data=statics,
            tgt_primary_key=self.key,
            tgt_encoding_types=_encoding(schema.static),
            model_type="TABULAR",
            workspace_dir=flat,
        )
        dp = self.dp_config(len(statics))
        engine.analyze(workspace_dir=flat, differential_privacy=dp)
        engine.encode(workspace_dir=flat)
        engine.train(
            max_training_time=min(FLAT_SHARE * minutes, budget.left() / 60),
            max_epochs=MAX_EPOCHS,
            device="cpu",
            workspace_dir=flat,
            differential_privacy=dp,
        )
        flat_seconds = budget.elapsed()
        engine.split(
            tgt_data=dynamics,
            ctx_data=statics,
            tgt_context_key=self.key,
            ctx_primary_key=self.key,
            tgt_encoding_types=_encoding(schema.dynamic),
            ctx_encoding_types=_encoding(schema.static),
            model_type="TABULAR",
            workspace_dir=seq,
        )
        engine.analyze(workspace_dir=seq, differential_privacy=dp)
        engine.encode(workspace_dir=seq)
        cap = budget.left()
        engine.train(
            max_training_time=max(cap, 1.0) / 60,
            max_epochs=MAX_EPOCHS,
            device="cpu",
            workspace_dir=seq,
            differential_privacy=dp,
        )
        self.progress = (
            f"flat: {_progress(flat)}, {flat_seconds:.0f} s with its data steps; "
            f"sequential: {_progress(seq)}, time cap {cap:.0f} s"
        )
        return self

    def dp_config(self, patients: int) -> Any:
        """Each model's DP settings (None without DP): half of epsilon and delta each."""
        if self.dp_epsilon is None:
            return None
        from mostlyai.engine.domain import DifferentialPrivacyConfig

        half = self.dp_epsilon / 2
        return DifferentialPrivacyConfig(
            max_epsilon=(1 - DP_ANALYSIS_SHARE) * half,
            value_protection_epsilon=DP_ANALYSIS_SHARE * half,
            delta=(self.dp_delta or 0.1 / patients) / 2,
        )

    def epsilon_spent(self) -> float:
        """Both models' epsilon: their analyses' share, and the largest DP-SGD epsilon their
        logs show within `max_epsilon` (the engine keeps only checkpoints within it)."""
        total, cap = 0.0, (1 - DP_ANALYSIS_SHARE) * self.dp_epsilon / 2
        for ws in (self.ws / "flat", self.ws / "sequential"):
            rows = pd.read_csv(ws / "ModelStore" / "model-data" / "progress-messages.csv")
            eps = rows["dp_eps"].dropna()
            total += DP_ANALYSIS_SHARE * self.dp_epsilon / 2 + eps[eps <= cap].max()
        return total

    def sample(self, n: int) -> Cohort:
        from mostlyai import engine

        engine.set_random_state(self.seed)
        flat, seq = self.ws / "flat", self.ws / "sequential"
        kw = {"rare_category_replacement_method": "sample", "device": "cpu"}
        engine.generate(sample_size=n, workspace_dir=flat, **kw)
        statics = pd.read_parquet(flat / "SyntheticData").reset_index(drop=True)
        engine.generate(ctx_data=statics, workspace_dir=seq, **kw)
        dynamics = pd.read_parquet(seq / "SyntheticData").reset_index(drop=True)
        return to_cohort(self.schema, statics, dynamics, self.fill, self.notes, self.key)


def _progress(ws: Path) -> str:
    """Epochs, steps and the best validation loss from the engine's progress log."""
    path = ws / "ModelStore" / "model-data" / "progress-messages.csv"
    if not path.exists():
        return "no progress log"
    rows = pd.read_csv(path)
    last = rows.iloc[-1]
    text = f"{last['epoch']:.1f} epochs, {int(last['steps'])} steps"
    val = rows.dropna(subset=["val_loss"]) if "val_loss" in rows else rows.iloc[:0]
    if len(val):
        best = val.loc[val["val_loss"].idxmin()]
        text += f", best val loss {best['val_loss']:.3f} at epoch {best['epoch']:.1f}"
    return text
