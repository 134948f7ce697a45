"""Health Gym v1 on a Cohort: encoder + WGAN-GP trainer + sampling, with a run folder.

The published model generates every variable at every step, statics included, so its
samples may show a patient's static attributes drifting; `sample` keeps that (faithful)
and the evaluation measures it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...data.cohort import Cohort
from ...data.parquet_shards import ParquetShards
from ...training import distributed, run_folder
from ...training.seeding import check_seed, fresh_seed
from ..base import RunFolderModel
from ..encoding import EncodedCohort, Encoder, check_steps, patients_per_batch
from ..layout import DesignLayout
from .config import PRESETS, V1Config
from .network import Generator, generate
from .trainer import V1Trainer


class HealthGymV1(RunFolderModel):
    """The published WGAN-GP (biLSTM generator and critic, correlation loss, curriculum).

    Every keyword is a `V1Config` field; defaults are the published ones. In a torchrun job
    (docs/distributed.md) every process calls `fit` and only rank 0 writes the run
    folder; a `ParquetShards` cohort is encoded shard by shard (each process holds only its
    own patients).
    """

    name = "v1"
    legacy_name = "HealthGymV1"
    summary = "Health Gym v1 as published: WGAN-GP, biLSTM generator and critic, curriculum"
    presets = PRESETS
    config_class = V1Config
    config: V1Config
    encoding_class = Encoder
    encoding_file = run_folder.ENCODER_FILE
    trainer_class = V1Trainer
    accepts = (Cohort, ParquetShards)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> HealthGymV1:
        """A model with a named preset's settings (see PRESETS), optionally overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls.from_options(name, **overrides)

    def _fit_encoding(self, cohort: Cohort | ParquetShards, ctx: distributed.Context) -> Encoder:
        distributed.check_batch_size(self.config.batch_size, ctx)
        if isinstance(cohort, ParquetShards):  # fitted on rank 0, column by column; broadcast
            fitted = cohort.fit_encoder().to_dict() if ctx.main else None
            return Encoder.from_dict(distributed.broadcast_object(fitted, ctx))
        return Encoder(cohort.schema).fit(cohort)

    def _trainer_and_data(
        self, cohort: Cohort | ParquetShards, encoder: Encoder, ctx: distributed.Context
    ) -> Any:
        trainer = V1Trainer(design_layout(encoder), self.config)
        if isinstance(cohort, ParquetShards):  # each process encodes only its own patients
            x, lengths = cohort.design(encoder, ctx.rank, ctx.world)
            return trainer, (x, lengths), {"sharded": True}
        encoded = encoder.transform(cohort)
        x = torch.from_numpy(design_matrix(encoded)).float()
        return trainer, (x, torch.from_numpy(encoded.lengths).long()), {}

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
        length = encoder.max_length if length is None else check_steps(length, "length")
        batch_size = patients_per_batch(batch_size, length)
        seed = fresh_seed() if seed is None else seed
        check_seed(seed)
        s = encoder.n_static
        done = 0
        for x in generate(generator, n, length, seed=seed, batch_size=batch_size):
            x = x.astype(np.float64)
            b = len(x)
            ids = np.arange(done + 1, done + b + 1)
            yield encoder.inverse_transform(x[..., :s], x[..., s:], ids=ids)
            done += b

    # ---- the run folder ----------------------------------------------------------------------
    def _build_network(self, encoding: Encoder, meta: dict[str, Any]) -> Generator:
        layout = design_layout(encoding)  # model.json's layout must be the encoder's
        if meta.get("layout") != layout.to_dict():
            raise ValueError(f"{run_folder.MODEL_FILE}: its layout is not the encoder's")
        return Generator(layout, self.config.noise_dim, self.config.hidden)

    def _metadata(self) -> dict[str, Any]:
        return {"layout": design_layout(self._encoding()).to_dict()}


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
