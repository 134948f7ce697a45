"""HealthGymGAN: Health Gym v1's WGAN-GP, rebuilt around the patient (the GAN beyond v1).

What it fixes in v1 (docs/models/gan.md): statics are drawn once
per patient by a static head, so they never drift; each patient gets a length from a head
conditioned on the statics and the critic never reads padding; missing-value flags are
generated as Gumbel-softmax draws with a per-step mean-matching loss, so missing rates follow
the real ones; and `sample(conditions=...)` / `sample(static=df)` generate patients with
chosen static values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...data.cohort import Cohort
from ...training import run_folder
from ...training.seeding import derive_seed
from ..base import ConditionableModel
from ..conditioning import encode_request, matches, requested_columns
from ..encoding import Column, Encoder
from ..layout import DesignLayout
from .config import GANConfig
from .network import Generator, draw
from .trainer import GANTrainer, build_generator, layouts_dict

#: Static candidates drawn per round when partial conditions are met by rejection.
REJECTION_BATCH = 4096
_REJECTION_TAG = 1  # keeps the rejection stream apart from the sampling stream of a seed


class HealthGymGAN(ConditionableModel):
    """Statics once per patient, variable lengths, generated missingness, conditional sampling.

    Every keyword is a `GANConfig` field; defaults train in minutes on 2 CPU cores.
    Conditions on some statics draw the others from the static head by rejection (at most
    `condition_max_draws` draws per patient; a real static matches within
    `condition_tolerance` on the encoded scale, then takes the exact value).
    """

    name = "gan"
    legacy_name = "HealthGymGAN"
    summary = "WGAN-GP beyond v1: static head, pair critic, calibrated rates"
    config_class = GANConfig
    config: GANConfig
    encoding_class = Encoder
    encoding_file = run_folder.ENCODER_FILE
    trainer_class = GANTrainer

    def _fit_encoding(self, cohort: Cohort, ctx: Any) -> Encoder:
        return Encoder(cohort.schema).fit(cohort)

    def _trainer_and_data(self, cohort: Cohort, encoder: Encoder, ctx: Any) -> Any:
        encoded = encoder.transform(cohort)
        trainer = GANTrainer(*block_layouts(encoder), encoder.max_length, self.config)
        data = (encoded.static, encoded.dynamic, encoded.lengths)
        return trainer, tuple(torch.from_numpy(a) for a in data), {}

    # ---- sampling -------------------------------------------------------------------------
    def _draw_batches(
        self, n: int, frame: pd.DataFrame | None, seed: int, length: int | None, batch_size: int
    ) -> Iterator[pd.DataFrame]:
        gen, encoder = self._fitted()
        given = None if frame is None else self._requested_statics(frame, seed)
        rng = torch.Generator().manual_seed(seed)
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            fixed = None if length is None else torch.full((b,), int(length))
            static_b = None if given is None else given[start : start + b]
            with torch.no_grad():
                p = draw(gen, b, rng, static=static_b, lengths=fixed, steps=length)
            table = encoder.inverse_transform(
                p.static.double().numpy(),
                p.dynamic.double().numpy(),
                p.lengths.numpy(),
                ids=np.arange(start + 1, start + b + 1),
            )
            if frame is not None:  # decoded reals are within rounding; write the exact values
                for name in frame.columns:
                    table[name] = np.repeat(frame[name].to_numpy()[start : start + b], p.lengths)
            yield table

    def _requested_statics(self, frame: pd.DataFrame, seed: int) -> torch.Tensor:
        """(n, S) statics meeting the request: as given, or drawn by rejection where partial."""
        gen, encoder = self._fitted()
        target = encode_request(encoder, frame)  # (n, S)
        if set(frame.columns) == {v.name for v in encoder.schema.static}:
            return torch.from_numpy(target).float()
        columns = requested_columns(encoder, frame)
        idx = np.concatenate([np.arange(c.start, c.end) for c in columns])
        group = np.unique(target[:, idx], axis=0, return_inverse=True)[1].ravel()
        rng = torch.Generator().manual_seed(derive_seed(seed, _REJECTION_TAG))
        out = target.copy()
        for g in range(group.max() + 1):
            rows = np.flatnonzero(group == g)
            found = self._reject(gen, columns, target[rows[0]], len(rows), rng, frame.iloc[rows[0]])
            found[:, idx] = target[rows][:, idx]
            out[rows] = found
        return torch.from_numpy(out).float()

    def _reject(
        self,
        gen: Generator,
        columns: list[Column],
        target: np.ndarray,
        need: int,
        rng: torch.Generator,
        request: pd.Series,
    ) -> np.ndarray:
        """`need` static rows from the static head that match `target` on `columns`."""
        cfg = self.config
        budget, drawn, found = cfg.condition_max_draws * need, 0, []
        while sum(len(f) for f in found) < need and drawn < budget:
            m = min(REJECTION_BATCH, budget - drawn)
            z = torch.randn((m, gen.noise_dim), generator=rng)
            u = torch.rand((m, gen.n_static), generator=rng)
            with torch.no_grad():
                candidates = gen.statics(z, u)[0].double().numpy()
            found.append(candidates[matches(columns, candidates, target, cfg.condition_tolerance)])
            drawn += m
        hits = np.concatenate(found)
        if len(hits) < need:
            wanted = {
                k: None if pd.isna(v) else v.item() if isinstance(v, np.generic) else v
                for k, v in request.items()
            }
            raise ValueError(
                f"the condition {wanted} held for {len(hits)} of {drawn} static draws "
                f"({len(hits) / drawn:.3%}): too rare to meet by rejection within "
                f"condition_max_draws={cfg.condition_max_draws} per patient; give every static "
                "variable (static= with all of them) to set them directly, or raise "
                "condition_max_draws"
            )
        return hits[:need]

    # ---- the run folder ----------------------------------------------------------------------
    def _build_network(self, encoding: Encoder, meta: dict[str, Any]) -> Generator:
        return build_generator(*block_layouts(encoding), encoding.max_length, self.config)

    def _metadata(self) -> dict[str, Any]:
        encoder = self._encoding()
        return {
            "layouts": layouts_dict(*block_layouts(encoder)),
            "max_length": encoder.max_length,
        }


def block_layouts(encoder: Encoder) -> tuple[DesignLayout | None, DesignLayout]:
    """Layouts of the static block (None without statics) and of the dynamic block."""
    return _layout(encoder.static_columns), _layout(encoder.dynamic_columns)


def _layout(columns: list[Column]) -> DesignLayout | None:
    if not columns:
        return None
    real_idx = [c.start for c in columns if c.kind == "real"]
    spans = [(c.start, c.end) for c in columns if c.kind != "real"]
    return DesignLayout(columns[-1].end, tuple(real_idx), tuple(spans))
