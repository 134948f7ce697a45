"""healthgym's own models in the comparison: HealthGymV1 (the faithful Health Gym v1 WGAN-GP,
published settings), HealthGymGAN (the WGAN-GP beyond v1) and HealthGym (the default model,
autoregressive), each with `max_minutes`.

Both are asked for more epochs than the budget allows (`epochs=10**6`; an epoch count only
decides when to stop, nothing is scheduled on it), so the clock stops them, as it does the
peers; the encoder is fitted inside the same clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import healthgym as hg
from healthgym import Cohort

from .common import Adapter, Budget

EPOCHS = 10**6


class _HealthGymAdapter(Adapter):
    model_class: Any = None

    def __init__(self, run_dir: str | Path | None = None, seed: int = 0, **settings: Any):
        super().__init__(library="healthgym")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seed = seed
        self.settings = {"epochs": EPOCHS, "seed": seed, **settings}
        self.model: Any = None

    def fit(self, train: Cohort, minutes: float) -> _HealthGymAdapter:
        budget = Budget(minutes)
        self.model = self.model_class(**self.settings)
        self.model.fit(train, self.run_dir, max_minutes=budget.left() / 60.0, progress=False)
        r = self.model.result
        self.progress = f"{r.steps} {self.model.step_unit}, {r.epochs} full epochs"
        return self

    def sample(self, n: int) -> Cohort:
        return self.model.sample(n, seed=self.seed)


class HealthGymV1Adapter(_HealthGymAdapter):
    """`healthgym.HealthGymV1()`: published settings (faithful)."""

    model_class = hg.HealthGymV1

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.name = "healthgym-v1"


class HealthGymAdapter(_HealthGymAdapter):
    """`healthgym.HealthGym()`: the default model, its default settings."""

    model_class = getattr(hg, "HealthGym", None)

    def __init__(self, **kw: Any) -> None:
        if self.model_class is None:
            raise ImportError("healthgym.HealthGym is not importable in this checkout")
        super().__init__(**kw)
        self.name = "healthgym"


class HealthGymGANAdapter(_HealthGymAdapter):
    """`healthgym.HealthGymGAN()`: the WGAN-GP beyond v1 (statics head, masks, lengths)."""

    model_class = hg.HealthGymGAN

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.name = "healthgym-gan"
