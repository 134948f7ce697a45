"""What every model class shares: keyword settings checked against its config dataclass, a
repr of the changed settings, `fit` on a cohort into a run folder (a temporary one when none
is given) and `save`. Subclasses implement `_fit`, `_fitted`, `_write_metadata`,
`_write_weights`, `sample` and `load`."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from ..cohort import Cohort
from ..training.runtime import cpu_threads, resolve_threads
from ..training.trainer import TrainResult


class RunFolderModel:
    """Base of HealthGym, HealthGymGAN and HealthGymV1."""

    config_class: ClassVar[type]
    #: cohort types `fit` accepts
    accepts: ClassVar[tuple[type, ...]] = (Cohort,)
    #: what ``result.steps`` counts, for messages
    step_unit: ClassVar[str] = "generator steps"

    def __init__(self, **settings: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = set(settings) - fields
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(fields)}")
        self.config = self.config_class(**settings)
        self.result: TrainResult | None = None

    def __repr__(self) -> str:
        changed = {
            f.name: getattr(self.config, f.name)
            for f in dataclasses.fields(self.config_class)
            if getattr(self.config, f.name) != f.default
        }
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    def fit(
        self,
        cohort: Any,
        run_dir: str | Path | None = None,
        *,
        resume: bool = False,
        max_minutes: float | None = None,
        progress: bool = True,
    ) -> Any:
        """Train on `cohort`; the run folder gets schema, encoder, checkpoints and metrics.

        `resume=True` continues the run in `run_dir` from its newest checkpoint;
        `max_minutes` stops cleanly (resume later to continue).
        """
        if not isinstance(cohort, self.accepts):
            raise ValueError(f"fit expects a healthgym Cohort, got {type(cohort).__name__}")
        if run_dir is None:
            with tempfile.TemporaryDirectory(prefix="healthgym-") as tmp:
                return self._fit(cohort, Path(tmp), resume, max_minutes, progress)
        return self._fit(cohort, Path(run_dir), resume, max_minutes, progress)

    def save(self, path: str | Path) -> Path:
        """Write a self-contained, pickle-free model folder (JSON/YAML + weights)."""
        self._fitted()
        path = Path(path)
        self._write_metadata(path)
        self._write_weights(path)
        return path

    def _fit(
        self, cohort: Any, run_dir: Path, resume: bool, max_minutes: float | None, progress: bool
    ) -> Any:
        raise NotImplementedError

    def _fitted(self) -> Any:
        raise NotImplementedError

    def _write_metadata(self, path: Path) -> None:
        raise NotImplementedError

    def _write_weights(self, path: Path) -> None:
        raise NotImplementedError


class ConditionalModel(RunFolderModel):
    """Base of the models that draw statics once per patient and take `conditions=` /
    `static=` (HealthGym, HealthGymGAN); they implement `sample_batches`."""

    def sample(
        self,
        n: int | None = None,
        seed: int | None = None,
        length: int | None = None,
        conditions: dict[str, Any] | None = None,
        static: pd.DataFrame | None = None,
        batch_size: int = 1024,
    ) -> Cohort:
        """`n` synthetic patients in original units and labels, fresh ids 1..n.

        `length` fixes every patient's number of steps (default: drawn per patient).
        `conditions={"Gender": "Female", "ICUType": "Medical"}` gives every patient those
        static values; `static=df` (one row per patient, columns = static variables) gives
        each patient its row's values. None/NaN asks for "missing" on `missing: flag`
        variables. How the other statics are drawn: see the class.
        """
        kw = {"seed": seed, "length": length, "batch_size": batch_size}
        with cpu_threads(resolve_threads()):
            tables = list(self.sample_batches(n, conditions=conditions, static=static, **kw))
        # Statics are constant by construction; strict=False only admits a flagged variable
        # that came out entirely missing in a small sample.
        return Cohort(pd.concat(tables, ignore_index=True), self._fitted()[1].schema, strict=False)

    def sample_batches(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError
