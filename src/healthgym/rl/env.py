"""The learned patient simulator as gymnasium environments, on a trained default model.

``env = hg.env.make(run_dir, reward="-(MAP_next < 65)")`` (actions: the run's role "action"
variables, or ``actions=[...]``), or through gymnasium: ``gymnasium.make("healthgym/Patient-v0",
run=run_dir, reward=...)`` and ``gymnasium.make_vec("healthgym/Patient-v0", num_envs=512,
run=run_dir, ...)``. ``reset(seed=)`` draws a new patient from the model (its statics, stay
length and first state; or given statics, ``options={"static": {...}}``); ``step(action)``
sets the treatment of the current step and draws the next state from the model given the
stay so far, the treatments included (`healthgym.rl.simulator`). An episode has the drawn
length's steps and one transition fewer; it ends terminated, or truncated when the stay
reaches the longest training stay (as `healthgym.rl.offline` exports real stays).
Observations and actions are laid out exactly as in the Minari export, so a policy trained
offline on the exported real (or synthetic) cohort runs here unchanged.

`VectorPatientEnv` is a `gymnasium.vector.VectorEnv`: many patients stepped in one model call
per token column, each at its own step, a finished one replaced by a new patient on the next
step (gymnasium 1.x's next-step auto-reset).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..extras import require

require("rl", "the simulator (healthgym.rl.env)")  # one line naming the extra, not an ImportError
import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from ..models.healthgym.model import HealthGym
from . import ENV_ID
from .simulator import Simulator


def make(
    run_dir: str | Path,
    *,
    reward: Any = "0",
    actions: list[str] | None = None,
    hidden: list[str] | None = None,
    num_envs: int | None = None,
    previous: bool = False,
    normalize: bool = False,
    workers: int = 1,
) -> Any:
    """The simulator of the default model in `run_dir`: a `PatientEnv`, or with `num_envs`
    a `VectorPatientEnv` stepping that many patients at once (with `workers` > 1, split
    among that many processes: `workers.WorkerPatientEnv`). `hidden` variables are left
    out of the observations (as in the export), not out of the reward; `previous` adds the
    treatments of the step before to the observations (as the export's ``previous``);
    `normalize` scales each observation column by the mean and standard deviation of patients
    drawn from the run (`observations.scaling_of_run`, as the export's ``normalize``)."""
    kw = dict(reward=reward, actions=actions, hidden=hidden, previous=previous, normalize=normalize)
    if workers != 1:
        if num_envs is None:
            raise ValueError("workers step a vector environment's patients: give num_envs too")
        from .workers import WorkerPatientEnv

        return WorkerPatientEnv(run_dir, num_envs, workers, serve_shard, **kw)
    model = HealthGym.load(run_dir)
    if num_envs is None:
        return PatientEnv(model, **kw)
    return VectorPatientEnv(model, num_envs, **kw)


class PatientEnv(gym.Env):
    """One simulated patient at a time (a gymnasium.Env)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, model: HealthGym, **options: Any) -> None:
        self.sim = Simulator(model, **options)
        self.action_space, self.observation_space = _spaces(self.sim)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)  # gymnasium seeds self.np_random
        self._rng = torch.Generator().manual_seed(int(self.np_random.integers(2**63)))
        self.sim.begin(1, self._rng, self.np_random, (options or {}).get("static"))
        info = {k: int(v[0]) for k, v in self.sim.length_info().items()}
        info["static"] = self._static_info()
        return self.sim.observe()[0], info

    def step(self, action: Any):
        if not hasattr(self, "_rng"):
            raise RuntimeError("call reset() before step()")
        if self.sim.finished()[0]:
            raise RuntimeError("the episode has ended: call reset()")
        a = self.sim.check_actions(action, 1)
        obs, reward, terminated, truncated = self.sim.advance(a, self._rng, self.np_random)
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def _static_info(self) -> dict[str, Any]:
        hidden = set(self.sim.hidden)
        return {k: _plain(v[0]) for k, v in self.sim.static_values.items() if k not in hidden}


class VectorPatientEnv(gym.vector.VectorEnv):
    """`num_envs` simulated patients stepped together (a gymnasium.vector.VectorEnv).

    ``reset(seed=, options={"static": {...}})`` -> observations (n, d), infos;
    ``step(actions (n,) or (n, A))`` -> observations, rewards, terminations, truncations,
    infos. A patient whose episode ended is replaced on the next step by a new one (its
    action is ignored; reward 0; ``infos["length"]`` with ``infos["_length"]`` marking the
    new patients), the options of the last reset applying to it too.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": "next_step"}

    def __init__(self, model: HealthGym, num_envs: int, **options: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive number of patients, got {num_envs!r}")
        self.sim = Simulator(model, **options)
        self.num_envs = num_envs
        self.single_action_space, self.single_observation_space = _spaces(self.sim)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, list):
            seed = seed[0]
        self._np = np.random.default_rng(seed)
        self._rng = torch.Generator().manual_seed(int(self._np.integers(2**63)))
        self._static = (options or {}).get("static")
        self.sim.begin(self.num_envs, self._rng, self._np, self._static)
        self._done = np.zeros(self.num_envs, dtype=bool)
        every = np.ones(self.num_envs, dtype=bool)
        lengths = self.sim.length_info()
        return self.sim.observe(), lengths | {f"_{k}": every for k in lengths}

    def step(self, actions: Any):
        if not hasattr(self, "_rng"):
            raise RuntimeError("call reset() before step()")
        a = self.sim.check_actions(actions, self.num_envs)
        restart = self._done
        obs, reward, terminated, truncated = self.sim.advance(
            a, self._rng, self._np, restart=restart, static=self._static
        )
        self._done = terminated | truncated
        infos: dict[str, Any] = {}
        if restart.any():
            lengths = self.sim.length_info()
            infos = lengths | {f"_{k}": restart.copy() for k in lengths}
        return obs, reward, terminated, truncated, infos


def serve_shard(pipe: Any, run_dir: str, n: int, options: dict[str, Any]) -> None:
    """A worker process of `workers.WorkerPatientEnv`: a `VectorPatientEnv` of `n` patients
    at one thread, answering the parent's commands (its errors and warnings sent back)."""
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            env = make(run_dir, num_envs=n, **options)
        spaces = (env.sim.levels, env.single_action_space, env.single_observation_space)
        pipe.send(("ok", (spaces, [str(w.message) for w in caught])))
    except Exception as error:  # noqa: BLE001 - the parent raises it
        pipe.send(("error", (type(error).__name__, str(error))))
        return
    while True:
        command, value = pipe.recv()
        if command == "close":
            return
        try:
            answer = env.reset(**value) if command == "reset" else env.step(value)
        except Exception as error:  # noqa: BLE001 - the parent raises it
            pipe.send(("error", (type(error).__name__, str(error))))
            continue
        pipe.send(("ok", answer))


def _spaces(sim: Simulator) -> tuple[gym.Space, gym.Space]:
    """One patient's action space (a level index per treatment) and observation space."""
    sizes = [len(sim.levels[a]) for a in sim.actions]
    action = gym.spaces.Discrete(sizes[0]) if len(sizes) == 1 else gym.spaces.MultiDiscrete(sizes)
    return action, gym.spaces.Box(-np.inf, np.inf, (len(sim.layout.names),), np.float32)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _make_env(run: str | Path, **options: Any) -> PatientEnv:
    """`gymnasium.make(ENV_ID, run=...)`."""
    return make(run, **options)


def _make_vector_env(run: str | Path, num_envs: int = 1, **options: Any) -> VectorPatientEnv:
    """`gymnasium.make_vec(ENV_ID, num_envs=..., run=...)`."""
    options.pop("vectorization_mode", None)
    return make(run, num_envs=num_envs, **options)


if ENV_ID not in gym.registry:
    gym.register(
        ENV_ID,
        entry_point="healthgym.rl.env:_make_env",  # text: a spec of it serialises (Minari)
        vector_entry_point="healthgym.rl.env:_make_vector_env",
        disable_env_checker=True,  # observations are unbounded reals, which it warns about
    )
