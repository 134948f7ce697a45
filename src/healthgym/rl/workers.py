"""A vector environment whose patients are stepped in worker processes (issue 29).

One `VectorPatientEnv` steps all its patients in one model call per token column, on one
core: at a few hundred patients its small matrix products do not split across threads.
`WorkerPatientEnv` splits the patients into `workers` shards, each a `VectorPatientEnv` in
its own process (its own run folder load, one thread), steps them at once and joins their
answers, so a machine's cores step patients in parallel. It is a `gymnasium.vector.VectorEnv`
with the same spaces, auto-reset, options and action checks as one `VectorPatientEnv`
(`env.make(run, num_envs=512, workers=2)`); its draws differ from one process's (each shard
has its own random stream, seeded from `reset(seed=)`).
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from .simulator import check_actions


class WorkerPatientEnv(gym.vector.VectorEnv):
    """`num_envs` simulated patients of the run in `run_dir`, stepped in `workers` processes
    (options as `env.make`'s), each running `serve(pipe, run_dir, patients, options)`
    (`env.serve_shard`: a `VectorPatientEnv` answering this class's commands)."""

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": "next_step"}

    def __init__(
        self,
        run_dir: str | Path,
        num_envs: int,
        workers: int,
        serve: Callable[..., None],
        **options: Any,
    ) -> None:
        self._pipes: list[Any] = []
        self._processes: list[Any] = []
        self.closed = True  # until the workers run: nothing to close
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive number of processes, got {workers!r}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < workers:
            raise ValueError(
                f"num_envs must be a number of patients >= workers ({workers}), got {num_envs!r}"
            )
        self.num_envs = num_envs
        self.sizes = [len(s) for s in np.array_split(np.arange(num_envs), workers)]
        context = mp.get_context("spawn")  # a fresh interpreter: no torch state forked
        for size in self.sizes:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=serve, args=(theirs, str(run_dir), size, options), daemon=True
            )
            process.start()
            theirs.close()
            self._pipes.append(ours)
            self._processes.append(process)
        self.closed = False
        spaces, caught = self._gather()[0]
        self.levels, self.single_action_space, self.single_observation_space = spaces
        for message in caught:  # a shard's warnings (about the options), said once
            warnings.warn(message, UserWarning, stacklevel=2)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        if isinstance(seed, list):
            seed = seed[0]
        seeds: list[int | None] = [None] * len(self.sizes)
        if seed is not None:  # one stream per shard, all from the one seed
            seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(len(seeds))]
        answers = self._ask([("reset", {"seed": s, "options": options}) for s in seeds])
        return np.concatenate([x[0] for x in answers]), self._infos([x[1] for x in answers])

    def step(self, actions: Any):
        a = check_actions(actions, self.num_envs, self.levels)
        at = np.cumsum([0, *self.sizes])
        answers = self._ask([("step", a[at[k] : at[k + 1]]) for k in range(len(self.sizes))])
        obs, reward, terminated, truncated, infos = zip(*answers, strict=True)
        joined = (np.concatenate(x) for x in (obs, reward, terminated, truncated))
        return *joined, self._infos(list(infos))

    def _ask(self, commands: list[tuple[str, Any]]) -> list[Any]:
        """Each worker's command sent, then every answer gathered (`_gather`)."""
        try:
            for pipe, command in zip(self._pipes, commands, strict=True):
                pipe.send(command)
        except OSError:  # a broken pipe: the worker is gone
            self._ended()
        return self._gather()

    def _gather(self) -> list[Any]:
        """Every worker's answer, in order; a worker's error raised here, the same type."""
        try:
            answers = [pipe.recv() for pipe in self._pipes]
        except (EOFError, OSError):
            self._ended()
        for kind, value in answers:
            if kind == "error":
                error_type, message = value
                raise (ValueError if error_type == "ValueError" else RuntimeError)(message)
        return [value for _, value in answers]

    def _infos(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        """The shards' infos (gymnasium's vector form: `key` values and a `_key` mask per
        patient) as one: a key a shard lacks is 0 there and masked out."""
        keys = [k for k in dict.fromkeys(k for i in infos for k in i) if not k.startswith("_")]
        out: dict[str, Any] = {}
        for key in keys:
            like = next(i[key] for i in infos if key in i)
            values, masks = [], []
            for info, n in zip(infos, self.sizes, strict=True):
                values.append(info[key] if key in info else np.zeros(n, like.dtype))
                masks.append(info[f"_{key}"] if key in info else np.zeros(n, bool))
            out[key], out[f"_{key}"] = np.concatenate(values), np.concatenate(masks)
        return out

    def _ended(self) -> NoReturn:
        """A worker is gone: one line saying so (its exit code), after the others stop."""
        for process in self._processes:
            process.join(timeout=1)
        codes = [p.exitcode for p in self._processes]
        raise RuntimeError(f"a worker process ended (exit codes {codes}): make the env again")

    def close_extras(self, **kwargs: Any) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
