"""HealthGym, the default model: an autoregressive likelihood model of whole patients.

Why a likelihood model: given minutes on a CPU, the WGAN-GP (v1 and its rebuild) is still
far from the data when the budget ends, while a model trained by maximum likelihood improves
every step, has a validation loss to stop on before it memorises patients, and reaches the
quality of the best peers (measured in `benchmarks/peers`, BENCHMARKS.md).
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
from ..schema import write_text_atomic
from ..tokenizer import Tokenizer
from ..training.ar_config import ARConfig
from ..training.ar_trainer import LikelihoodTrainer, build_model
from ..training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..training.trainer import derive_seed
from .autoregressive import PatientModel, draw_statics, draw_steps
from .base import ConditionalModel
from .conditioning import sampling_request
from .healthgym_v1 import MODEL_FILE, SCHEMA_FILE, read_model_meta

MODEL_NAME = "HealthGym"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.pt"
_DECODE = 7  # keeps the decoding stream of a seed apart from the sampling stream


class HealthGym(ConditionalModel):
    """Autoregressive model of whole patients: statics, steps, missingness and length.

    Every keyword is an `ARConfig` field. `fit` stops on the validation loss (or
    `max_minutes`); `sample(n, conditions=..., static=..., length=...)` fixes those and
    draws the other statics (and the length) from their conditional, without rejection.
    """

    config_class = ARConfig
    step_unit = "optimizer steps"

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.encoder: Tokenizer | None = None
        self.network: PatientModel | None = None

    def _fit(
        self, cohort: Cohort, run_dir: Path, resume: bool, max_minutes: float | None, progress: bool
    ) -> HealthGym:
        cfg = self.config
        tokenizer = Tokenizer(cohort.schema, cfg.bins, cfg.fine).fit(cohort)
        if not tokenizer.dynamic_columns:
            raise ValueError(f"{MODEL_NAME} needs at least one dynamic variable in the schema")
        if resume and (run_dir / TOKENIZER_FILE).exists():
            if Tokenizer.load(run_dir / TOKENIZER_FILE).to_dict() != tokenizer.to_dict():
                raise ValueError(f"{run_dir}: cannot resume, the cohort differs from the run's")
        if not resume and (run_dir / MODEL_FILE).exists():
            raise FileExistsError(
                f"{run_dir} holds a run; resume it (--resume, resume=True) or use a new folder"
            )
        self.encoder = tokenizer
        tokens = tokenizer.transform(cohort, seed=cfg.seed)
        trainer = LikelihoodTrainer(tokenizer, cfg)
        self._write_metadata(run_dir)
        self.result = trainer.fit(
            torch.from_numpy(tokens.static),
            torch.from_numpy(tokens.dynamic),
            torch.from_numpy(tokens.lengths),
            run_dir,
            resume=resume,
            max_minutes=max_minutes,
            progress=progress,
        )
        self.best_val_nll = trainer.best_val
        self.network = trainer.model.cpu().eval()
        self._write_weights(run_dir)
        return self

    # ---- sampling -------------------------------------------------------------------------
    def sample_batches(
        self,
        n: int | None = None,
        seed: int | None = None,
        length: int | None = None,
        conditions: dict[str, Any] | None = None,
        static: pd.DataFrame | None = None,
        batch_size: int = 1024,
    ) -> Iterator[pd.DataFrame]:
        """The synthetic long table in pieces of `batch_size` patients (bounded memory)."""
        net, tokenizer = self._fitted()
        n, frame, seed = sampling_request(
            tokenizer, n, conditions, static, length, batch_size, seed, tokenizer.max_length
        )
        requested = None if frame is None else self._request_tokens(frame)
        rng = torch.Generator().manual_seed(seed)
        temperature = self.config.temperature
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
            dynamic = draw_steps(net.sequence, static_tokens, lengths, rng, temperature)
            table = tokenizer.inverse_transform(
                static_tokens.numpy(),
                dynamic.numpy(),
                lengths.numpy(),
                ids=np.arange(start + 1, start + b + 1),
                seed=derive_seed(seed, _DECODE, start),
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

    # ---- persistence ----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> HealthGym:
        """A model from a run or model folder; weights load with `weights_only=True`."""
        path = Path(path)
        meta = read_model_meta(path, MODEL_NAME)
        model = cls(**ARConfig.from_dict(meta["config"]).to_dict())
        model.encoder = Tokenizer.load(path / TOKENIZER_FILE)
        weights = path / WEIGHTS_FILE
        if not weights.exists():
            raise ValueError(f"{path}: no trained weights ({WEIGHTS_FILE})")
        state = load_checkpoint(weights, required=("model",))
        net = build_model(model.encoder, model.config)
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{weights} does not fit {path / MODEL_FILE}: {e}") from None
        model.network = net.eval()
        return model

    def _write_metadata(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        assert self.encoder is not None
        meta = {"model": MODEL_NAME, "config": self.config.to_dict()}
        write_text_atomic(path / MODEL_FILE, json.dumps(meta, indent=1))
        self.encoder.save(path / TOKENIZER_FILE)
        self.encoder.schema.to_yaml(path / SCHEMA_FILE)

    def _write_weights(self, path: Path) -> None:
        save_checkpoint({"model": self._fitted()[0].state_dict()}, path / WEIGHTS_FILE)

    def _fitted(self) -> tuple[PatientModel, Tokenizer]:
        if self.network is None or self.encoder is None:
            raise RuntimeError("the model is not trained: call fit(cohort) or load(run_dir)")
        return self.network, self.encoder
