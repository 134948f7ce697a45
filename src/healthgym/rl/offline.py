"""Offline-RL datasets from a cohort (real or synthetic): Farama's Minari format.

One episode per patient stay, as `healthgym.rl.transitions` makes them: observations (their
names in the dataset's description), actions (one action variable gives a Discrete space,
several a MultiDiscrete one), rewards, and a truncation where a stay reaches the cohort's
longest (the run's, when exported beside one).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.cohort import Cohort
from ..extras import require
from .observations import ObservationLayout, scaling
from .transitions import DEFAULT_ACTION_BINS, scaling_of_run, transitions


def export_minari(
    cohort: Cohort,
    out_dir: str | Path,
    *,
    reward: str | Callable[..., Any],
    actions: Sequence[str] = (),
    dataset_id: str = "healthgym/cohort-v0",
    action_bins: int = DEFAULT_ACTION_BINS,
    hidden: Sequence[str] = (),
    description: str | None = None,
    run: str | Path | None = None,
    previous: bool = False,
    normalize: bool = False,
) -> Path:
    """Write the cohort as Minari dataset `dataset_id` under `out_dir`, a Minari datasets
    root (read it back with ``MINARI_DATASETS_PATH=out_dir`` and
    ``minari.load_dataset(dataset_id)``); `actions` default to the schema's role-"action"
    variables. With `run` (a default model's run folder trained on this schema) the dataset
    names that run's simulator as its environment (`recover_environment()`,
    `d3rlpy.datasets.get_minari`), and stays end truncated at the run's longest stay, as
    there. `previous`: observations hold the treatments of the step before. `normalize`:
    each observation column scaled by its mean and standard deviation (those of patients
    drawn from `run` when given, as its simulator's; else this cohort's), both recorded in
    the description. Returns the dataset's folder."""
    check_dataset_id(dataset_id)
    require("rl", "the Minari export")
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    spec, longest = None, None
    if run is not None:
        spec, longest = _simulator_spec(cohort, run, reward, actions, hidden, previous)
        spec.kwargs["normalize"] = normalize
    data = transitions(cohort, reward, actions, action_bins, hidden, longest, previous)
    layout: dict[str, Any] = {}
    if normalize:
        if run is None:
            mean, scale = scaling(np.concatenate(data.observations))
        else:
            from ..models.healthgym.model import HealthGym

            names = list(data.action_levels)
            mean, scale = scaling_of_run(HealthGym.load(run), names, hidden, previous)
        data.observations = [((o - mean) / scale).astype(np.float32) for o in data.observations]
        layout = {"mean": mean.tolist(), "scale": scale.tolist()}
    actions = list(data.action_levels)
    if not data.observations:
        raise ValueError("no stay has two steps: there is no transition to export")
    sizes = [len(data.action_levels[a]) for a in actions]
    action_space = (
        gym.spaces.Discrete(sizes[0]) if len(sizes) == 1 else gym.spaces.MultiDiscrete(sizes)
    )
    dim = data.observations[0].shape[1]
    observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
    episodes = []
    for i, (o, a, r, cut) in enumerate(
        zip(data.observations, data.actions, data.rewards, data.truncated, strict=True)
    ):
        end = [False] * (len(r) - 1)
        episodes.append(
            EpisodeBuffer(
                id=i,
                observations=o,
                actions=a.astype(np.int64),
                rewards=list(r),
                terminations=[*end, not cut],
                truncations=[*end, cut],
            )
        )
    layout = {"observations": data.observation_names, "actions": data.action_levels, **layout}
    text = description or "A healthgym cohort exported for offline RL."
    text += " Layout (JSON): " + json.dumps(layout, default=str)
    made = _new_folders(Path(out_dir) / dataset_id)  # a failed export leaves none of them
    with _removed_on_failure(made), _datasets_root(out_dir), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`author_email` is set to None")
        warnings.filterwarnings("ignore", "env_spec is None")
        warnings.filterwarnings("ignore", "`eval_env` is set to None")
        if dataset_id in minari.list_local_datasets():
            raise FileExistsError(f"{out_dir} already holds the Minari dataset {dataset_id!r}")
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=episodes,
            env=spec,
            action_space=action_space,
            observation_space=observation_space,
            algorithm_name="recorded care (behaviour policy)",
            author="healthgym",
            code_permalink="https://pypi.org/project/healthgym/",
            description=text,
        )
    if data.skipped:
        warnings.warn(
            f"{data.skipped} stays of one step have no transition: left out", stacklevel=2
        )
    return Path(out_dir) / dataset_id


def _simulator_spec(
    cohort: Cohort,
    run: str | Path,
    reward: str | Callable[..., Any],
    actions: Sequence[str],
    hidden: Sequence[str],
    previous: bool,
) -> tuple[Any, int]:
    """The gymnasium spec of the simulator of `run` with these settings, and its longest
    stay; a ValueError where its observations or actions would not be the dataset's."""
    from gymnasium.envs.registration import EnvSpec

    from ..models.healthgym.tokenizer import Tokenizer
    from ..training import run_folder
    from . import ENV_ID

    if callable(reward):
        raise ValueError("an environment spec names its reward as an expression, not a function")
    tok = Tokenizer.load(Path(run) / run_folder.TOKENIZER_FILE)
    names = list(actions) or [v.name for v in cohort.schema.actions]
    levels = {c.name: c.values for c in tok.dynamic_columns if c.name in names}
    ours = {n: cohort.schema[n].levels for n in names}
    back = levels if previous else None
    mine = ObservationLayout.of(cohort.schema, [*names, *hidden], {}, back).names
    theirs = ObservationLayout.of(tok.schema, [*names, *hidden], {}, back).names
    if mine != theirs or levels != ours:
        raise ValueError(
            f"{run}: its simulator's observations or treatment levels differ from this "
            "cohort's (train it on this schema)"
        )
    kwargs = {"run": str(Path(run).resolve()), "reward": reward, "actions": names}
    kwargs["previous"] = previous
    spec = EnvSpec(
        ENV_ID,
        entry_point="healthgym.rl.env:_make_env",
        kwargs={**kwargs, "hidden": list(hidden)},
        disable_env_checker=True,
        max_episode_steps=max(1, tok.max_length - 1),  # transitions of the longest stay
    )
    return spec, tok.max_length


#: A Minari dataset id: [namespace/]name-vN, each part a plain name (no "..", no leading "/").
_DATASET_ID = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*/)?[A-Za-z0-9_][A-Za-z0-9_.-]*-v[0-9]+")


def check_dataset_id(dataset_id: str) -> None:
    """A ValueError unless ``dataset_id`` is a Minari id that names a folder inside the
    datasets root (checked before anything is created)."""
    if not isinstance(dataset_id, str) or not _DATASET_ID.fullmatch(dataset_id):
        raise ValueError(
            f"dataset name {dataset_id!r} must be NAMESPACE/NAME-vN or NAME-vN of letters, "
            "digits, '_', '-' and '.' (not starting with '.'), e.g. healthgym/cohort-v0"
        )


def _new_folders(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    return [p for p in (path, *path.parents) if not p.exists()]


@contextlib.contextmanager
def _removed_on_failure(made: list[Path]) -> Iterator[None]:
    """The folders in ``made`` (created by the block) are removed if it fails."""
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first: what the block created and nothing else
            shutil.rmtree(folder, ignore_errors=True)
        raise


@contextlib.contextmanager
def _datasets_root(path: str | Path) -> Iterator[None]:
    """Minari reads and writes under $MINARI_DATASETS_PATH: point it at `path` for a while."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(path).resolve())
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
