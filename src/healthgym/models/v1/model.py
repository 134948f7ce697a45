"""Health Gym v1 on a Cohort: encoder + WGAN-GP trainer + sampling, with a run folder.

The published model generates every variable at every step, statics included, so its
samples may show a patient's static attributes drifting; `sample` keeps that (faithful)
and the evaluation measures it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..cohort import Cohort
from ..encoding import EncodedCohort, Encoder
from ..schema import write_text_atomic
from ..training import distributed
from ..training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ..training.config import CURRICULA, V1Config
from ..training.parquet_shards import ParquetShards
from ..training.trainer import WGANTrainer, load_generator
from .base import RunFolderModel
from .layout import DesignLayout
from .v1 import Generator, generate

MODEL_FILE = "model.json"
ENCODER_FILE = "encoder.json"
SCHEMA_FILE = "schema.yaml"
WEIGHTS_FILE = "generator.pt"
MODEL_NAME = "HealthGymV1"

#: Named settings. "faithful" is the published set-up (ART for HIV hyperparameters, curriculum
#: derived from the cohort's longest stay); "demo" is a short run for the bundled demo cohort.
PRESETS: dict[str, dict[str, Any]] = {
    "faithful": {},
    "demo": {"epochs": 3, "hidden": 64, "noise_dim": 64, "batch_size": 128},
    # The published set-up of each Health Gym dataset (`healthgym train --dataset NAME` uses the
    # one of the same name). Our epoch visits every curriculum length in turn; the published
    # code differs per dataset: ART walked the lengths every epoch (100 epochs, resumed to 200);
    # hypotension ran 5000 epochs per length, one length after the other, on random windows
    # (ours: the first L steps, so each length still gets 5000 passes); sepsis kept one loader
    # per true patient length 1..20, while our stage L trains on the patients with length >= L
    # truncated to L.
    "art-for-hiv": {
        "batch_size": 256,
        "curriculum": CURRICULA["art-for-hiv"],
        "lambda_corr": 10.0,
        "epochs": 200,
    },
    "hypotension": {
        "batch_size": 128,
        "curriculum": CURRICULA["hypotension"],
        "lambda_corr": 1.0,
        "epochs": 5000,
    },
    "sepsis": {
        "batch_size": 32,
        "curriculum": CURRICULA["sepsis"],
        "lambda_corr": 10.0,
        "epochs": 400,
    },
}


class HealthGymV1(RunFolderModel):
    """The published WGAN-GP (biLSTM generator and critic, correlation loss, curriculum).

    Every keyword is a `V1Config` field; defaults are the published ones. In a torchrun job
    (README "Distributed training") every process calls `fit` and only rank 0 writes the run
    folder; a `ParquetShards` cohort is encoded shard by shard (each process holds only its
    own patients).
    """

    config_class = V1Config
    accepts = (Cohort, ParquetShards)

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.encoder: Encoder | None = None
        self.generator: Generator | None = None

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> HealthGymV1:
        """A model with a named preset's settings (see PRESETS), optionally overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def _fit(
        self,
        cohort: Cohort | ParquetShards,
        run_dir: Path,
        resume: bool,
        max_minutes: float | None,
        progress: bool,
    ) -> HealthGymV1:
        # One process: ctx is a no-op. A torchrun job: every process runs this, rank 0 writes.
        with distributed.process_group(self.config.resolve_device()) as ctx:
            distributed.check_batch_size(self.config.batch_size, ctx)
            shards = isinstance(cohort, ParquetShards)
            if shards:  # fitted on rank 0, one column at a time; sent to the others
                fitted = cohort.fit_encoder().to_dict() if ctx.main else None
                encoder = Encoder.from_dict(distributed.broadcast_object(fitted, ctx))
            else:
                encoder = Encoder(cohort.schema).fit(cohort)
            if resume and (run_dir / ENCODER_FILE).exists():
                saved = Encoder.load(run_dir / ENCODER_FILE)
                if saved.to_dict() != encoder.to_dict():
                    raise ValueError(f"{run_dir}: cannot resume, the cohort differs from the run's")
            self.encoder = encoder
            layout = design_layout(encoder)
            trainer = WGANTrainer(layout, self.config)
            exists = ctx.main and not resume and (run_dir / MODEL_FILE).exists()
            if distributed.broadcast_object(exists, ctx):
                raise FileExistsError(
                    f"{run_dir} holds a run; resume it (--resume, resume=True) or use a new folder"
                )
            if ctx.main:
                self._write_metadata(run_dir, layout)
            if shards:
                x, lengths = cohort.design(encoder, ctx.rank, ctx.world)
            else:
                encoded = encoder.transform(cohort)
                x = torch.from_numpy(design_matrix(encoded)).float()
                lengths = torch.from_numpy(encoded.lengths).long()
            self.result = trainer.fit(
                x,
                lengths,
                run_dir,
                resume=resume,
                max_minutes=max_minutes,
                progress=progress,
                sharded=shards,
            )
            self.generator = trainer.generator.eval()
            if ctx.main:
                self._write_weights(run_dir)
        return self

    # ---- sampling -------------------------------------------------------------------------
    def sample(
        self, n: int, seed: int | None = None, length: int | None = None, batch_size: int = 1024
    ) -> Cohort:
        """`n` synthetic patients in original units and labels, fresh ids 1..n."""
        tables = list(self.sample_batches(n, seed=seed, length=length, batch_size=batch_size))
        encoder = self._fitted()[1]
        return Cohort(pd.concat(tables, ignore_index=True), encoder.schema, strict=False)

    def sample_batches(
        self, n: int, seed: int | None = None, length: int | None = None, batch_size: int = 1024
    ) -> Iterator[pd.DataFrame]:
        """The synthetic long table in pieces of `batch_size` patients (bounded memory)."""
        generator, encoder = self._fitted()
        if not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n must be a positive number of patients, got {n!r}")
        length = encoder.max_length if length is None else int(length)
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
        s = encoder.n_static
        done = 0
        for x in generate(generator, n, length, seed=seed, batch_size=batch_size):
            x = x.astype(np.float64)
            b = len(x)
            ids = np.arange(done + 1, done + b + 1)
            yield encoder.inverse_transform(x[..., :s], x[..., s:], ids=ids)
            done += b

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a self-contained, pickle-free model folder (JSON/YAML + weights)."""
        generator, encoder = self._fitted()
        path = Path(path)
        self._write_metadata(path, generator.layout)
        self._write_weights(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HealthGymV1:
        """A model from a run or model folder; weights load with `weights_only=True`."""
        path = Path(path)
        meta = read_model_meta(path, MODEL_NAME)
        model = cls(**V1Config.from_dict(meta["config"]).to_dict())
        model.encoder = Encoder.load(path / ENCODER_FILE)
        weights = path / WEIGHTS_FILE
        layout = DesignLayout.from_dict(meta["layout"])
        if weights.exists():
            state = load_checkpoint(weights, required=("generator",))
            model.generator = Generator(layout, model.config.noise_dim, model.config.hidden)
            try:
                model.generator.load_state_dict(state["generator"])
            except RuntimeError as e:
                raise CheckpointError(f"{weights} does not fit {path / MODEL_FILE}: {e}") from None
        else:
            ckpt = latest_checkpoint(path)
            if ckpt is None:
                raise ValueError(f"{path}: no trained weights ({WEIGHTS_FILE} or a checkpoint)")
            model.generator = load_generator(ckpt)
        model.generator.eval()
        return model

    def _write_metadata(self, path: Path, layout: DesignLayout) -> None:
        path.mkdir(parents=True, exist_ok=True)
        assert self.encoder is not None
        meta = {"model": MODEL_NAME, "config": self.config.to_dict(), "layout": layout.to_dict()}
        write_text_atomic(path / MODEL_FILE, json.dumps(meta, indent=1))
        self.encoder.save(path / ENCODER_FILE)
        self.encoder.schema.to_yaml(path / SCHEMA_FILE)

    def _write_weights(self, path: Path) -> None:
        generator = self._fitted()[0]
        save_checkpoint({"generator": generator.state_dict()}, path / WEIGHTS_FILE)

    def _fitted(self) -> tuple[Generator, Encoder]:
        if self.generator is None or self.encoder is None:
            raise RuntimeError("the model is not trained: call fit(cohort) or load(run_dir)")
        return self.generator.cpu(), self.encoder


def read_model_meta(path: Path, expected: str | None = None) -> dict[str, Any]:
    """`model.json` of a run folder, checked to name the `expected` model class."""
    meta_path = path / MODEL_FILE
    if not meta_path.exists():
        raise ValueError(f"{path}: not a healthgym run folder (no {MODEL_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path}: not a healthgym model file")
    if expected is not None and meta.get("model") != expected:
        raise ValueError(f"{meta_path}: holds a {meta.get('model')!r} model, not {expected}")
    return meta


def design_layout(encoder: Encoder) -> DesignLayout:
    """v1's per-step design row: the static block then the dynamic block, side by side."""
    real_idx, spans = [], []
    offset = 0
    for columns, width in (
        (encoder.static_columns, encoder.n_static),
        (encoder.dynamic_columns, encoder.n_dynamic),
    ):
        for c in columns:
            if c.kind == "real":
                real_idx.append(offset + c.start)
            else:
                spans.append((offset + c.start, offset + c.end))
        offset += width
    return DesignLayout(offset, tuple(real_idx), tuple(spans))


def design_matrix(encoded: EncodedCohort) -> np.ndarray:
    """(N, T, S + D): statics repeated at every step, as v1 models them."""
    n, t, _ = encoded.dynamic.shape
    static = np.broadcast_to(encoded.static[:, None, :], (n, t, encoded.static.shape[1]))
    return np.concatenate([static, encoded.dynamic], axis=2)
