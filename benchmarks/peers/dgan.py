"""Gretel's DGAN (DoppelGANger, `gretel-synthetics`): statics as attributes, dynamics as
features, through `DGAN.train_numpy` / `generate_numpy` with explicit output types.

What the library needs, and how it maps back to the cohort's schema:

- Continuous features may not be missing (the library drops patients with many NaNs and
  interpolates the rest). Each dynamic real with `missing: flag` gets a discrete feature
  `<name>__measured` (0/1); its gaps are carried forward within the patient, then filled
  with the training median (as healthgym's own encoder does); generation puts NaN back
  where the flag is 0. A static real with missing values gets the same treatment as an
  attribute.
- Binary/categorical variables are discrete outputs over their level strings; a missing
  cell is a level of its own (`__missing__`), mapped back to missing.
- Fixed-length sequences only (`max_sequence_len`): with stays of different lengths the
  length becomes a discrete attribute, shorter stays are padded by repeating their last
  step, and each generated sequence is cut at its generated length.

Library defaults otherwise (`sample_len=1` for the 12-step demo, batch 1024, learning rates,
attribute discriminator, feature and example scaling), `cuda=False`.

Budget: DGAN has no time limit and no learning-rate schedule; `epochs` is raised and the
library's `progress_callback` (called after every batch) ends training when the budget has
run out: the weights are those after the last full batch, the same as training for the
batches that fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthgym import Cohort

from .common import MISSING, Adapter, Budget, Fill, level_strings, peer_tables, to_cohort

EPOCHS = 10**6
MEASURED = "__measured"
LENGTH = "__length"


class _OutOfTime(Exception):
    pass


class DGANAdapter(Adapter):
    def __init__(
        self,
        run_dir: str | Path | None = None,
        seed: int = 0,
        sample_len: int = 1,
        example_scaling: bool = True,
    ):
        super().__init__(name="dgan", library="gretel-synthetics")
        self.seed = seed
        self.sample_len = sample_len
        self.example_scaling = example_scaling
        self.settings = {
            "epochs": EPOCHS,
            "sample_len": sample_len,
            "apply_example_scaling": example_scaling,
            "cuda": False,
        }

    # ---- encoding ---------------------------------------------------------------------------
    def _layout(self, train: Cohort) -> None:
        """Which attribute/feature columns exist, their types and fill values."""
        from gretel_synthetics.timeseries_dgan.config import OutputType

        schema = train.schema
        self.attr_cols: list[str] = []
        self.attr_types: list[Any] = []
        self.feat_cols: list[str] = []
        self.feat_types: list[Any] = []
        table = train.table
        statics = train.static_table()
        for v in schema.static:
            self.attr_cols.append(v.name)
            if v.kind == "real":
                self.attr_types.append(OutputType.CONTINUOUS)
                if statics[v.name].isna().any():
                    self.attr_cols.append(v.name + MEASURED)
                    self.attr_types.append(OutputType.DISCRETE)
            else:
                self.attr_types.append(OutputType.DISCRETE)
        self.lengths_vary = train.lengths.nunique() > 1
        if self.lengths_vary:
            self.attr_cols.append(LENGTH)
            self.attr_types.append(OutputType.DISCRETE)
        for v in schema.dynamic:
            self.feat_cols.append(v.name)
            if v.kind == "real":
                self.feat_types.append(OutputType.CONTINUOUS)
                if table[v.name].isna().any():
                    self.feat_cols.append(v.name + MEASURED)
                    self.feat_types.append(OutputType.DISCRETE)
            else:
                self.feat_types.append(OutputType.DISCRETE)

    def _arrays(self, train: Cohort) -> tuple[np.ndarray, list[np.ndarray]]:
        schema = train.schema
        statics, dynamics = peer_tables(train, missing=MISSING)
        for v in schema.static:
            if v.kind == "real" and v.name + MEASURED in self.attr_cols:
                measured = statics[v.name].notna()
                statics[v.name + MEASURED] = np.where(measured, "1", "0")
                statics[v.name] = statics[v.name].fillna(self.fill.values[v.name])
        lengths = train.lengths.to_numpy()
        if self.lengths_vary:
            statics[LENGTH] = [str(n) for n in lengths]
        for v in schema.dynamic:
            if v.kind == "real" and v.name + MEASURED in self.feat_cols:
                col = dynamics[v.name]
                dynamics[v.name + MEASURED] = np.where(col.notna(), "1", "0")
                carried = col.groupby(dynamics[schema.id], sort=False).ffill()
                dynamics[v.name] = carried.fillna(self.fill.values[v.name])
        attributes = statics[self.attr_cols].to_numpy(dtype=object)
        values = dynamics[self.feat_cols].to_numpy(dtype=object)
        features, start = [], 0
        for n in lengths:
            seq = values[start : start + n]
            if n < self.max_len:  # pad by repeating the last step
                seq = np.vstack([seq, np.repeat(seq[-1:], self.max_len - n, axis=0)])
            features.append(seq)
            start += n
        return attributes, features

    # ---- fit / sample -----------------------------------------------------------------------
    def fit(self, train: Cohort, minutes: float) -> DGANAdapter:
        import torch
        from gretel_synthetics.timeseries_dgan.config import DGANConfig
        from gretel_synthetics.timeseries_dgan.dgan import DGAN

        budget = Budget(minutes)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        self.schema, self.fill = train.schema, Fill.of(train)
        self.max_len = int(train.lengths.max())
        if self.max_len % self.sample_len:
            raise ValueError(f"sample_len {self.sample_len} must divide {self.max_len}")
        self._layout(train)
        attributes, features = self._arrays(train)
        config = DGANConfig(
            max_sequence_len=self.max_len,
            sample_len=self.sample_len,
            epochs=EPOCHS,
            apply_example_scaling=self.example_scaling,
            cuda=False,
        )
        self.model = DGAN(config)
        self.batches = 0
        self.epochs_done = 0.0

        def stop_when_out_of_time(info: Any) -> None:
            self.batches += 1
            self.epochs_done = info.epoch + (info.batch + 1) / info.total_batches
            if budget.over():
                raise _OutOfTime

        try:
            self.model.train_numpy(
                features=features,
                feature_types=self.feat_types,
                attributes=attributes,
                attribute_types=self.attr_types,
                progress_callback=stop_when_out_of_time,
            )
        except _OutOfTime:
            pass
        self.progress = f"{self.batches} batches, {self.epochs_done:.1f} epochs"
        return self

    def sample(self, n: int) -> Cohort:
        import torch

        torch.manual_seed(self.seed + 1)
        attributes, features = self.model.generate_numpy(n)
        attrs = pd.DataFrame(np.asarray(attributes, dtype=object), columns=self.attr_cols)
        schema = self.schema
        key = schema.id
        attrs[key] = np.arange(1, n + 1)
        for v in schema.static:
            if v.name + MEASURED in self.attr_cols:
                attrs[v.name] = attrs[v.name].where(attrs[v.name + MEASURED] == "1", np.nan)
        lengths = np.full(n, self.max_len)
        if self.lengths_vary:
            lengths = np.array([int(float(x)) for x in attrs[LENGTH]])
        rows = []
        for i, (seq, length) in enumerate(zip(features, lengths, strict=True)):
            frame = pd.DataFrame(np.asarray(seq, dtype=object)[:length], columns=self.feat_cols)
            frame[key] = i + 1
            rows.append(frame)
        dyn = pd.concat(rows, ignore_index=True)
        for v in schema.dynamic:
            if v.name + MEASURED in self.feat_cols:
                measured = dyn[v.name + MEASURED].astype(str) == "1"
                dyn[v.name] = pd.to_numeric(dyn[v.name]).where(measured, np.nan)
            elif v.kind != "real":
                known = set(level_strings(v)) | {MISSING}
                dyn[v.name] = dyn[v.name].where(dyn[v.name].isin(known), MISSING)
        statics = attrs[[key, *[v.name for v in schema.static]]]
        dynamics = dyn[[key, *[v.name for v in schema.dynamic]]]
        return to_cohort(schema, statics, dynamics, self.fill, self.notes, key)


class DGANNoExampleScalingAdapter(DGANAdapter):
    """DGAN with `apply_example_scaling=False`: no per-patient midpoint/half-range attributes
    (with the library default, carried-forward gaps make many series constant, half-range 0)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(example_scaling=False, **kw)
        self.name = "dgan-noexample"
