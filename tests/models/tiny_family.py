"""A throw-away fourth model family, to show that a family is one folder and one registry
line: each design column's mean (one-hot shares, reals on [0, 1]), learned by gradient
descent through the shared training loop, sampled as independent draws."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from healthgym.data.cohort import Cohort
from healthgym.models.base import RunFolderModel
from healthgym.models.config import ConfigBase
from healthgym.models.encoding import Encoder
from healthgym.training import run_folder
from healthgym.training.loop import Trainer, fingerprint


@dataclass(frozen=True)
class MeansConfig(ConfigBase):
    epochs: int = 40
    batch_size: int = 8
    lr: float = 0.05
    seed: int = 0
    device: str = "cpu"
    max_loss: float = 1e6


class Means(nn.Module):
    def __init__(self, n_static: int, n_dynamic: int) -> None:
        super().__init__()
        self.static = nn.Parameter(torch.zeros(n_static))  # (S,)
        self.dynamic = nn.Parameter(torch.zeros(n_dynamic))  # (D,)


class MeansTrainer(Trainer):
    family = "means"
    guarded = ("loss",)
    shown = ("loss",)

    def __init__(self, encoder: Encoder, config: MeansConfig) -> None:
        self.config, self.device = config, torch.device("cpu")
        self.model = Means(encoder.n_static, encoder.n_dynamic)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=config.lr)

    def prepare(self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> str:
        self.data = static, dynamic, lengths
        return fingerprint(static, dynamic, lengths)

    @property
    def network(self) -> nn.Module:
        return self.model

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.data[0]))
        return np.array_split(order, max(1, len(order) // self.config.batch_size))

    def step(self, batch: np.ndarray) -> dict[str, float]:
        static, dynamic, lengths = (t[torch.from_numpy(batch)] for t in self.data)
        live = torch.arange(dynamic.shape[1]) < lengths[:, None]  # (B, T)
        loss = ((static - self.model.static) ** 2).mean() + (
            (dynamic[live] - self.model.dynamic) ** 2
        ).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": float(loss)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])


class MeansModel(RunFolderModel):
    """Independent draws around each column's mean (no dynamics, no associations)."""

    name = "means"
    legacy_name = "MeansModel"
    summary = "each column's mean, drawn independently (a test family)"
    presets = {"quick": {"epochs": 5}}
    config_class = MeansConfig
    encoding_class = Encoder
    encoding_file = run_folder.ENCODER_FILE
    trainer_class = MeansTrainer
    sampling_weights = "model"
    step_unit = "steps"

    def _fit_encoding(self, cohort: Cohort, ctx: Any) -> Encoder:
        return Encoder(cohort.schema).fit(cohort)

    def _trainer_and_data(self, cohort: Cohort, encoder: Encoder, ctx: Any) -> Any:
        encoded = encoder.transform(cohort)
        data = (encoded.static, encoded.dynamic, encoded.lengths)
        return MeansTrainer(encoder, self.config), tuple(torch.from_numpy(a) for a in data), {}

    def _build_network(self, encoding: Encoder, meta: dict[str, Any]) -> Means:
        return Means(encoding.n_static, encoding.n_dynamic)

    def sample(self, n: int, seed: int | None = None, length: int | None = None) -> Cohort:
        tables = list(self.sample_batches(n, seed=seed, length=length))
        return Cohort(pd.concat(tables, ignore_index=True), self.schema, strict=False)

    def sample_batches(
        self, n: int, seed: int | None = None, length: int | None = None
    ) -> Iterator[pd.DataFrame]:
        net, encoder = self._fitted()
        rng = np.random.default_rng(seed)
        t = length or encoder.max_length
        static = net.static.detach().numpy() + rng.normal(0, 0.05, (n, encoder.n_static))
        dynamic = net.dynamic.detach().numpy() + rng.normal(0, 0.05, (n, t, encoder.n_dynamic))
        yield encoder.inverse_transform(static, dynamic)
