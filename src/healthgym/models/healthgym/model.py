"""HealthGym, the default model: an autoregressive likelihood model of whole patients.

Why a likelihood model: given minutes on a CPU, the WGAN-GP (v1 and its rebuild) is still
far from the data when the budget ends, while a model trained by maximum likelihood improves
every step, has a validation loss to stop on before it memorises patients, and reaches the
quality of the best peers (measured in `benchmarks/peers`, BENCHMARKS.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...data.atomic import write_text_atomic
from ...data.cohort import Cohort
from ...data.parquet_shards import ParquetShards
from ...training import distributed, run_folder
from ...training.seeding import derive_seed
from ..base import ConditionableModel
from . import stream
from .config import DROPOUT, SMALL_BELOW, SMALL_DROPOUT, HealthGymConfig
from .network import PatientModel
from .row_mask import RowMask
from .sampler import draw_statics, draw_stays, draw_steps
from .tokenizer import Tokenizer
from .trainer import HealthGymTrainer, build_model

_DECODE = 7  # keeps the decoding stream of a seed apart from the sampling stream


class HealthGym(ConditionableModel):
    """Autoregressive model of whole patients: statics, steps, missingness and length.

    Every keyword is a `HealthGymConfig` field. `fit` stops on the validation loss (or
    `max_minutes`); `sample(n, conditions=..., static=..., length=...)` fixes those and
    draws the other statics (and the length) from their conditional, without rejection.
    A `ParquetShards` cohort (`--stream`) is tokenized chunk by chunk, each process holding
    only its own patients' steps (`stream.py`).
    """

    name = "healthgym"
    legacy_name = "HealthGym"
    summary = "autoregressive likelihood model of whole patients; stops on a validation loss"
    private = True
    keeps_rows = True
    #: `simulator`: each step draws whether the stay ends there (`end="drawn"`), so death,
    #: discharge and the stay's length respond to treatment in `healthgym.rl`, and reads the
    #: previous step's treatments directly (`direct_treatments`) (issue 28)
    presets = {"simulator": {"end": "drawn", "direct_treatments": True}}
    config_class = HealthGymConfig
    config: HealthGymConfig
    encoding_class = Tokenizer
    encoding_file = run_folder.TOKENIZER_FILE
    encoding_attr = "tokenizer"
    trainer_class = HealthGymTrainer
    sampling_weights = "best"
    fixed_longest = True
    step_unit = "optimizer steps"
    accepts = (Cohort, ParquetShards)

    #: model.json's "privacy" block of a differentially private run (`private.py`), else None
    privacy: dict[str, Any] | None = None
    #: column -> [mean, scale] of the observations a simulator of this model can show, from
    #: patients drawn from it after training (`rl.transitions.observation_statistics`); kept
    #: with the run where the schema names treatments, else None
    observation_stats: dict[str, list[float]] | None = None
    _private: Any = None  # the `private.PrivateRun` while a DP fit runs
    _draws: dict[str, int] | None = None  # a --stream fit: this process's tie streams' start

    def result_lines(self) -> list[str]:
        if not self.privacy:
            return []
        from .dp.run import summary_line

        return [f"privacy: {summary_line(self.privacy)}"]

    @property
    def best_val_nll(self) -> float | None:
        """Validation NLL (nats per patient) of the weights the last `fit` kept."""
        return None if self.result is None else self.result.best_val

    def _fit(self, cohort: Cohort, run_dir: Any, resume: bool, *args: Any) -> HealthGym:
        if self.config.dropout is None:  # decided by the cohort's size, once; model.json keeps it
            small = len(cohort) < SMALL_BELOW and self.config.dp_epsilon is None
            self.config = replace(self.config, dropout=SMALL_DROPOUT if small else DROPOUT)
        if self.config.end is None:  # decided by the schema's rows block, once
            rows = cohort.schema.rows
            ends = "drawn" if rows.last or rows.last_patterns else "length"
            self.config = replace(self.config, end=ends)
        if self.config.dp_epsilon is None:
            return super()._fit(cohort, run_dir, resume, *args)
        if isinstance(cohort, ParquetShards):
            raise ValueError("differentially private training reads the cohort in memory")
        from .dp.run import fit_private  # opacus: only in DP mode

        return fit_private(self, super()._fit, cohort, run_dir, resume, *args)

    @classmethod
    def from_meta(cls, path: Any, meta: dict[str, Any], **changes: Any) -> HealthGym:
        saved = meta.get("config")
        if isinstance(saved, dict):  # written before these settings: trained without them
            older = {
                "last_value": False, "average": 0.0, "levels": False, "end": "length",
                "skip": False,
            }  # fmt: skip
            changes = {k: v for k, v in older.items() if k not in saved} | changes
        model = super().from_meta(path, meta, **changes)
        block = meta.get("privacy")
        model.privacy = block if isinstance(block, dict) else None
        model.observation_stats = _read_observation_stats(path / run_folder.OBSERVATIONS_FILE)
        return model

    def _train(self, cohort: Any, encoding: Any, ctx: Any, run_dir: Any, *args: Any) -> None:
        super()._train(cohort, encoding, ctx, run_dir, *args)
        if ctx.main and encoding.schema.actions:  # what its simulator's observations scale by
            from ...rl.transitions import observation_statistics

            self.observation_stats = observation_statistics(self)
            self._write_observation_stats(run_dir)

    def save(self, path: Any) -> Any:
        path = super().save(path)
        self._write_observation_stats(path)
        return path

    def _write_observation_stats(self, folder: Any) -> None:
        if self.observation_stats is not None:
            text = json.dumps(self.observation_stats, indent=1)
            write_text_atomic(Path(folder) / run_folder.OBSERVATIONS_FILE, text)

    def _metadata(self) -> dict[str, Any]:
        if self._private is not None:
            return {"privacy": self._private.block()}
        return {} if self.privacy is None else {"privacy": self.privacy}

    def _fit_encoding(self, cohort: Cohort | ParquetShards, ctx: distributed.Context) -> Tokenizer:
        if self._private is not None:
            return self._private.fit_tokenizer(cohort)
        cfg = self.config
        if isinstance(cohort, ParquetShards):  # one pass over the file on rank 0; broadcast
            starts = [
                distributed.shard_range(len(cohort), r, ctx.world)[0] for r in range(ctx.world)
            ]
            fitted = None
            if ctx.main:
                tok, draws = stream.fit_tokenizer(
                    cohort, cfg.bins, cfg.fine, cfg.tokenizer_sample, cfg.seed, starts
                )
                fitted = tok.to_dict(), draws
            tok_dict, draws = distributed.broadcast_object(fitted, ctx)
            self._draws = draws[ctx.rank]
            return Tokenizer.from_dict(tok_dict)
        # A torchrun job: fitted on rank 0, the same on every process.
        fitted = Tokenizer(cohort.schema, cfg.bins, cfg.fine).fit(cohort)
        if not ctx.distributed:
            return fitted
        return Tokenizer.from_dict(distributed.broadcast_object(fitted.to_dict(), ctx))

    def _trainer_and_data(
        self, cohort: Cohort | ParquetShards, tokenizer: Tokenizer, ctx: distributed.Context
    ) -> Any:
        if self._private is not None:
            return self._private.trainer_and_data(cohort, tokenizer)
        trainer = HealthGymTrainer(tokenizer, self.config)
        if isinstance(cohort, ParquetShards):  # each process reads its own patients' rows
            start, stop = distributed.shard_range(len(cohort), ctx.rank, ctx.world)
            static, dynamic = stream.tokens(
                cohort,
                tokenizer,
                self._draws,
                self.config.seed,
                start,
                stop,
                self.config.last_value,
            )
            static = np.concatenate(distributed.gather_objects(static, ctx))  # a few bytes each
            data = (static, dynamic, cohort.lengths.astype(np.int64))
            return trainer, tuple(torch.from_numpy(a) for a in data), {"first": start}
        tokens = tokenizer.transform(cohort, seed=self.config.seed, hold=self.config.last_value)
        data = (tokens.static, tokens.dynamic, tokens.lengths)
        return trainer, tuple(torch.from_numpy(a) for a in data), {}

    # ---- sampling -------------------------------------------------------------------------
    def _draw_batches(
        self, n: int, frame: pd.DataFrame | None, seed: int, length: int | None, batch_size: int
    ) -> Iterator[pd.DataFrame]:
        net, tokenizer = self._fitted()
        requested = None if frame is None else self._request_tokens(frame)
        rng = torch.Generator().manual_seed(seed)
        temperature = self.config.temperature
        mask = RowMask.of(tokenizer)  # the schema's rows block, kept while drawing
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            given = net.statics.unknown(b, torch.device("cpu"))
            if requested is not None:
                want = requested[start : start + b]
                given = torch.where(want >= 0, want, given)
            if length is not None:
                given[:, -1] = int(length) - 1
            static_tokens = draw_statics(net.statics, given, rng, temperature)
            lengths = static_tokens[:, -1] + 1
            if net.sequence.ends:  # the steps draw where each stay ends
                asked = None if length is None else lengths
                dynamic, lengths = draw_stays(net.sequence, static_tokens, rng, temperature, mask,
                                              asked)  # fmt: skip
                static_tokens[:, -1] = lengths - 1
            else:
                dynamic = draw_steps(net.sequence, static_tokens, lengths, rng, temperature, mask)
            table = tokenizer.inverse_transform(
                static_tokens.numpy(),
                dynamic.numpy(),
                lengths.numpy(),
                ids=np.arange(start + 1, start + b + 1),
                seed=derive_seed(seed, _DECODE, start),
                hold=self.config.last_value,
            )
            if frame is not None:  # a requested real decodes within its bin; write it exactly
                for name in frame.columns:
                    table[name] = np.repeat(
                        frame[name].to_numpy()[start : start + b], lengths.numpy()
                    )
            yield table

    def _request_tokens(self, frame: pd.DataFrame) -> torch.Tensor:
        """(n, S) static tokens of a request; -1 where the request leaves a token free."""
        tokenizer = self._fitted()[1]
        out = np.full((len(frame), len(tokenizer.static_vocab)), -1, dtype=np.int64)  # + length
        at = 0
        for c in tokenizer.static_columns:
            width = len(c.vocab)
            if c.name in frame:
                out[:, at : at + width] = np.stack([c.token_of(v) for v in frame[c.name]])
            at += width
        return torch.from_numpy(out)

    # ---- the run folder ----------------------------------------------------------------------
    def _build_network(self, encoding: Tokenizer, meta: dict[str, Any]) -> PatientModel:
        return build_model(encoding, self.config)


def _read_observation_stats(path: Path) -> dict[str, list[float]] | None:
    """A run's observation statistics (None where it has none); a ValueError naming the file
    where it is not a mapping of column names to [mean, scale > 0]."""
    if not path.is_file():
        return None
    try:
        stats = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(stats, dict) or not all(
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int | float) and np.isfinite(x) for x in v)
        and v[1] > 0
        for v in stats.values()
    ):
        raise ValueError(f"{path}: expected {{column: [mean, scale > 0]}} for every column")
    return stats
