"""What every model class shares: keyword settings checked against its config dataclass, a
repr of the changed settings, `fit` into a run folder (a temporary one when none is given),
`save` and `load` through `training.run_folder` (no pickle: weights load with
weights_only=True), and the capabilities a family states for the CLI to ask.

A family implements `_fit_encoding`, `_trainer_and_data`, `_build_network` (an untrained
network for `load`) and `sample_batches`; `ConditionableModel` adds `sample` with conditions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from ..data.cohort import Cohort
from ..data.parquet_shards import ParquetShards
from ..data.row_rules import check_rows
from ..training import distributed, run_folder
from ..training.budget import Budget
from ..training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ..training.loop import Trainer, TrainResult, check_checkpoint
from ..training.runtime import cpu_threads, resolve_threads
from .conditioning import sampling_request
from .config import ConfigBase
from .encoding import patients_per_batch


class RunFolderModel:
    """Base of HealthGym, HealthGymGAN and HealthGymV1."""

    #: the family's one name: registry, CLI ``--model``, model.json, checkpoints
    name: ClassVar[str]
    #: what model.json's "model" said in healthgym 0.1.0 (the class name)
    legacy_name: ClassVar[str]
    config_class: ClassVar[type[ConfigBase]]
    #: the class turning a cohort into the network's numbers (Tokenizer or Encoder), its file
    encoding_class: ClassVar[Any]
    encoding_file: ClassVar[str]
    #: the attribute holding the fitted encoding ("encoder" or "tokenizer")
    encoding_attr: ClassVar[str] = "encoder"
    trainer_class: ClassVar[type[Trainer]]
    #: the checkpoint state's entry holding the weights that sampling uses
    sampling_weights: ClassVar[str] = "generator"
    #: cohort types `fit` accepts
    accepts: ClassVar[tuple[type, ...]] = (Cohort,)
    #: what ``result.steps`` counts, for messages
    step_unit: ClassVar[str] = "generator steps"

    # ---- capabilities: what the CLI and the registry ask of a family ------------------------
    #: one line for `healthgym models` and --help
    summary: ClassVar[str] = ""
    #: named settings (`from_options(preset=...)`, the CLI's --preset); a published dataset's
    #: name among them makes its preset the default for --dataset
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: trains with differential privacy (the dp_* settings, --dp-epsilon)
    private: ClassVar[bool] = False
    #: `sample(conditions=...)` fixes static values (--condition)
    conditioning: ClassVar[bool] = False
    #: samples only rows the schema's rows block allows (exclusive items, last-/first-only)
    keeps_rows: ClassVar[bool] = False

    @classmethod
    def wrote(cls, meta: dict[str, Any]) -> bool:
        """Whether a model.json names this family (by this release's name or 0.1.0's)."""
        return meta.get("model") in (cls.name, cls.legacy_name)

    @classmethod
    def streaming(cls) -> bool:
        """`fit` reads a Parquet file chunk by chunk (`ParquetShards`, --stream)."""
        return ParquetShards in cls.accepts

    @classmethod
    def distributable(cls) -> bool:
        """`fit` runs in a torchrun job, one process per device (--nproc)."""
        return cls.trainer_class.distributable

    @classmethod
    def from_options(cls, preset: str | None = None, **settings: Any) -> RunFolderModel:
        """A model with a named preset's settings (`presets`), then ``settings`` over them."""
        return cls(**{**cls.preset_settings(preset), **settings})

    @classmethod
    def preset_settings(cls, preset: str | None) -> dict[str, Any]:
        """The settings of the preset called ``preset`` ({} for None); a ValueError names the
        family's presets."""
        if preset is None:
            return {}
        if preset not in cls.presets:
            known = f"its presets: {sorted(cls.presets)}" if cls.presets else "it has none"
            raise ValueError(f"--preset {preset} is not a {cls.name} preset ({known})")
        return dict(cls.presets[preset])

    def result_lines(self) -> list[str]:
        """What the CLI prints about a finished fit beyond epochs and steps."""
        return []

    def __init__(self, **settings: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = set(settings) - fields
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(fields)}")
        self.config = self.config_class.from_dict(settings)  # checks each setting's type
        self.network: torch.nn.Module | None = None
        setattr(self, self.encoding_attr, None)
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
        budget_began: float | None = None,
    ) -> Any:
        """Train on `cohort`; the run folder gets schema, encoding, checkpoints and metrics.

        `resume=True` continues the run in `run_dir` from its newest checkpoint;
        `max_minutes` is a wall-time budget from this call (or from `budget_began`, a
        `time.monotonic()` reading: the command passes its own start), set-up included:
        training stops cleanly at the last step expected to end inside it (resume later to
        continue; `healthgym.training.budget`).
        """
        if not isinstance(cohort, self.accepts):
            raise ValueError(f"fit expects a healthgym Cohort, got {type(cohort).__name__}")
        budget = Budget.of(max_minutes, began=budget_began)  # checked before any work
        schema = cohort.schema if isinstance(cohort, Cohort | ParquetShards) else None
        if isinstance(cohort, Cohort):  # in memory: the rows obey the schema's rules
            check_rows(cohort.table, cohort.schema)
        if schema is not None and schema.rows and not self.keeps_rows:
            warnings.warn(
                f"{self.name} does not keep the schema's rows block when it samples; the "
                "report's row-kind section shows how far its rows keep it",
                stacklevel=2,
            )
        if run_dir is None:
            with tempfile.TemporaryDirectory(prefix="healthgym-") as tmp:
                return self._fit(cohort, Path(tmp), resume, budget, progress)
        return self._fit(cohort, Path(run_dir), resume, budget, progress)

    @property
    def schema(self) -> Any:
        """The schema of the cohort the model was trained on."""
        return self._encoding().schema

    def save(self, path: str | Path) -> Path:
        """Write a self-contained, pickle-free model folder (JSON/YAML + weights)."""
        self._fitted()
        path = Path(path)
        self._write_metadata(path)
        self._write_weights(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """A model from a run or model folder; weights load with `weights_only=True`."""
        path = Path(path)
        meta = read_model_meta(path, cls)
        model = cls.from_meta(path, meta)
        encoding = cls.encoding_class.load(path / cls.encoding_file)  # checks its own sizes
        weights, source = read_weights(path, cls)
        try:
            with torch.device("meta"):  # the network the files declare, without its memory
                declared = model._build_network(encoding, meta)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        check_sizes(declared, weights, source, path / cls.encoding_file)
        network = model._build_network(encoding, meta)
        try:
            network.load_state_dict(weights)
        except RuntimeError as e:
            raise CheckpointError(
                f"{source} does not fit {path / run_folder.MODEL_FILE}: {e}"
            ) from None
        model._set_fitted(network.eval(), encoding)
        return model

    @classmethod
    def from_meta(cls, path: Path, meta: dict[str, Any], **changes: Any) -> Any:
        """An untrained model with the settings of run folder ``path`` (its `read_model_meta`),
        ``changes`` applied; a ValueError names model.json and the setting at fault."""
        try:
            saved = cls.config_class.from_dict(meta.get("config", {})).to_dict()
        except ValueError as e:
            raise ValueError(f"{path / run_folder.MODEL_FILE}: {e}") from None
        return cls(**{**saved, **changes})

    # ---- training ----------------------------------------------------------------------------
    def _fit(
        self, cohort: Any, run_dir: Path, resume: bool, budget: Budget | None, progress: bool
    ) -> Any:
        """Fit the encoding, check the run folder, train, write metadata and weights.

        In a distributed job (v1) every process runs this; rank 0 checks and writes."""
        with self._process_group() as ctx:
            encoding = self._fit_encoding(cohort, ctx)
            if not encoding.dynamic_columns:
                raise ValueError(
                    f"{type(self).__name__} needs at least one dynamic variable in the schema"
                )
            problem = None
            with contextlib.ExitStack() as held:
                if ctx.main:  # rank 0 checks and holds the folder; every process stops alike
                    try:
                        run_folder.check_not_foreign(run_dir)  # before the folder is touched
                        held.enter_context(run_folder.locked(run_dir))
                        self._check_run_folder(run_dir, encoding, resume)
                    except (ValueError, FileExistsError) as e:
                        problem = e
                problem = distributed.broadcast_object(problem, ctx)
                if problem is not None:
                    raise problem
                self._train(cohort, encoding, ctx, run_dir, resume, budget, progress)
        return self

    def _train(
        self,
        cohort: Any,
        encoding: Any,
        ctx: distributed.Context,
        run_dir: Path,
        resume: bool,
        budget: Budget | None,
        progress: bool,
    ) -> None:
        """Train in the checked (and, on rank 0, locked) run folder; write the weights."""
        setattr(self, self.encoding_attr, encoding)
        trainer, data, options = self._trainer_and_data(cohort, encoding, ctx)
        # Written once the loop has matched a resumed run's checkpoint (or starts a new one):
        # a refused resume leaves the folder as it was.
        trainer.before_training = lambda: self._write_metadata(run_dir)
        self.result = trainer.fit(
            *data, run_dir, resume=resume, max_minutes=budget, progress=progress, **options
        )
        self.network = trainer.network.cpu().eval()
        if ctx.main:
            self._write_weights(run_dir)

    def _check_run_folder(self, run_dir: Path, encoding: Any, resume: bool) -> None:
        """A resumed run must be this family's, with its settings (but those a resume may
        change), on the same cohort; a new one needs a free folder. Reads, never writes."""
        if resume and run_folder.has_model(run_dir):
            meta = read_model_meta(run_dir)
            if not self.wrote(meta):
                raise ValueError(
                    f"{run_dir} holds a {meta.get('model')!r} run, not {self.name!r}: resume it "
                    "with the model that trained it (leave --model out, or name that one)"
                )
            saved_config = type(self).from_meta(run_dir, meta).config.to_dict()
            mine = self.config.to_dict()
            changed = [
                f"{k} {saved_config[k]!r} -> {mine[k]!r}"
                for k in mine
                if k not in self.trainer_class.resumable and saved_config[k] != mine[k]
            ]
            if changed:
                raise ValueError(
                    f"{run_dir}: cannot resume with other settings ({', '.join(changed[:5])}"
                    f"{', ...' if len(changed) > 5 else ''}): leave them out to resume, or "
                    "train into a new folder"
                )
            saved = run_dir / self.encoding_file
            if saved.exists() and self.encoding_class.load(saved).to_dict() != encoding.to_dict():
                raise ValueError(
                    f"{run_dir}: cannot resume, the data differs from the run's (train into a "
                    "new folder)"
                )
        if not resume and run_folder.has_model(run_dir):
            raise FileExistsError(
                f"{run_dir} holds a run; resume it (--resume, resume=True) or use a new folder"
            )

    def _write_metadata(self, path: Path) -> None:
        encoding = self._encoding()
        run_folder.write_meta(path, self.name, self.config.to_dict(), **self._metadata())
        encoding.save(path / self.encoding_file)
        encoding.schema.to_yaml(path / run_folder.SCHEMA_FILE)

    def _write_weights(self, path: Path) -> None:
        weights = {"model": self._fitted()[0].state_dict()}
        save_checkpoint(weights, path / run_folder.WEIGHTS_FILE)

    # ---- the family's own --------------------------------------------------------------------
    def sample(
        self, n: int, seed: int | None = None, length: int | None = None, **options: Any
    ) -> Cohort:
        """`n` synthetic patients in original units and labels, fresh ids 1..n; ``options``:
        the family's own (`conditions=` where it conditions)."""
        raise NotImplementedError

    def sample_batches(
        self, n: int, seed: int | None = None, length: int | None = None, **options: Any
    ) -> Iterator[pd.DataFrame]:
        """The synthetic long table of `sample`, in pieces (bounded memory)."""
        raise NotImplementedError

    def _process_group(self) -> Any:
        """The torchrun group to train in, for a distributable family (else one process)."""
        if self.distributable():
            return distributed.process_group(self.config.resolve_device())
        return contextlib.nullcontext(distributed.Context())

    def _fit_encoding(self, cohort: Any, ctx: distributed.Context) -> Any:
        """The encoding fitted to `cohort`."""
        raise NotImplementedError

    def _trainer_and_data(
        self, cohort: Any, encoding: Any, ctx: distributed.Context
    ) -> tuple[Trainer, tuple[Any, ...], dict[str, Any]]:
        """The family's trainer, the tensors its `fit` takes and extra `fit` options."""
        raise NotImplementedError

    def _build_network(self, encoding: Any, meta: dict[str, Any]) -> torch.nn.Module:
        """The untrained network of a saved model, for its weights to load into."""
        raise NotImplementedError

    def _metadata(self) -> dict[str, Any]:
        """What model.json holds beyond the name and config."""
        return {}

    # ---- the fitted parts ----------------------------------------------------------------------
    def _encoding(self) -> Any:
        """The fitted encoding (set by `_fit` before training starts)."""
        encoding = getattr(self, self.encoding_attr)
        if encoding is None:
            raise RuntimeError("the model is not trained: call fit(cohort) or load(run_dir)")
        return encoding

    def _set_fitted(self, network: torch.nn.Module, encoding: Any) -> None:
        self.network = network
        setattr(self, self.encoding_attr, encoding)

    def _fitted(self) -> tuple[Any, Any]:
        """(trained network on the CPU, encoding); RuntimeError before fit or load."""
        encoding = self._encoding()
        if self.network is None:
            raise RuntimeError("the model is not trained: call fit(cohort) or load(run_dir)")
        return self.network.cpu(), encoding


class ConditionableModel(RunFolderModel):
    """Base of the models that draw statics once per patient and take `conditions=` /
    `static=` (HealthGym, HealthGymGAN); they implement `_draw_batches`."""

    conditioning = True

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

    def sample_batches(
        self,
        n: int | None = None,
        seed: int | None = None,
        length: int | None = None,
        conditions: dict[str, Any] | None = None,
        static: pd.DataFrame | None = None,
        batch_size: int = 1024,
    ) -> Iterator[pd.DataFrame]:
        """The synthetic long table in pieces of `batch_size` patients (bounded memory); the
        arguments as in `sample`, checked now (before the first piece is drawn)."""
        encoding = self._fitted()[1]
        longest = encoding.max_length if self.fixed_longest else None
        n, frame, seed = sampling_request(
            encoding, n, conditions, static, length, batch_size, seed, longest
        )
        batch_size = patients_per_batch(batch_size, length or encoding.max_length)
        return self._draw_batches(n, frame, seed, length, batch_size)

    #: a patient has at most the training cohort's longest stay (else any `length` is drawn)
    fixed_longest: ClassVar[bool] = False

    def _draw_batches(
        self, n: int, frame: pd.DataFrame | None, seed: int, length: int | None, batch_size: int
    ) -> Iterator[pd.DataFrame]:
        """The family's draws: `n` patients, `frame` the checked request (or None)."""
        raise NotImplementedError


def read_model_meta(path: Path, expected: type[RunFolderModel] | None = None) -> dict[str, Any]:
    """`model.json` of a run folder, checked to name the `expected` model family."""
    meta = run_folder.read_meta(path)
    if expected is not None and not expected.wrote(meta):
        raise ValueError(
            f"{path / run_folder.MODEL_FILE}: holds a {meta.get('model')!r} model, not "
            f"{expected.name!r}"
        )
    return meta


def check_sizes(
    declared: torch.nn.Module, weights: dict[str, Any], source: Path, encoding_file: Path
) -> None:
    """CheckpointError unless every tensor of ``declared`` (built on the meta device from
    model.json and ``encoding_file``) has its shape in ``weights``: a run folder from
    elsewhere whose files declare sizes its weights do not have is refused before the
    network is allocated."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{source}: the weights are not a mapping of tensors")
    for key, tensor in declared.state_dict().items():
        held = weights.get(key)
        shape = None if not isinstance(held, torch.Tensor) else list(held.shape)
        if shape != list(tensor.shape):
            raise CheckpointError(
                f"{source} does not fit {encoding_file.parent / run_folder.MODEL_FILE} and "
                f"{encoding_file.name}: {key} is {shape or 'missing'} in the weights, "
                f"{list(tensor.shape)} as the settings declare it"
            )


def read_weights(path: Path, model_class: type[RunFolderModel]) -> tuple[dict[str, Any], Path]:
    """The sampling network's state dict of a run folder and the file it came from.

    `weights.pt`, else a 0.1.0 weights file, else the newest checkpoint (a run stopped
    before its weights were written)."""
    weights = path / run_folder.WEIGHTS_FILE
    if weights.exists():
        return load_checkpoint(weights, required=("model",))["model"], weights
    for name, key in run_folder.LEGACY_WEIGHTS.items():
        if (path / name).exists():
            return load_checkpoint(path / name, required=(key,))[key], path / name
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise ValueError(f"{path}: no trained weights ({run_folder.WEIGHTS_FILE} or a checkpoint)")
    saved = load_checkpoint(ckpt, required=("state",))
    try:
        check_checkpoint(ckpt, saved, model_class.name)
        return saved["state"][model_class.sampling_weights], ckpt
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt}: no weights to sample from ({e})") from None
