"""A learned patient simulator: a gymnasium environment on a trained default model.

``env = hg.env.make(run_dir, reward="-(MAP_next < 65)")`` (actions: the run's role "action"
variables, or ``actions=[...]``). ``reset(seed=)`` draws a new patient from the model (its
statics, stay length and first state; or given statics, ``options={"static": {...}}``);
``step(action)`` sets the treatment of the current step and draws the next state from the
model given the whole history, the treatments included. An episode has the drawn length's
steps and one transition fewer; it ends terminated, or truncated when the stay reaches the
longest training stay (as `healthgym.rl.offline` exports real stays). Observations and
actions are laid out exactly as in the Minari export, so a policy trained offline on the
exported real (or synthetic) cohort runs here unchanged.

The model learned the recorded care: what it simulates under other treatments is what the
observational data suggests, not a causal effect (docs/rl.md).

`VectorPatientEnv` steps many patients in one model call per token column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..extras import require

require("rl", "the simulator (healthgym.rl.env)")  # one line naming the extra, not an ImportError
import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from ..data.constraints import enforce
from ..models.healthgym.model import HealthGym
from ..models.healthgym.sampler import draw_statics
from ..models.healthgym.tokenizer import held
from .observations import ObservationLayout
from .rewards import Reward


def make(
    run_dir: str | Path,
    *,
    reward: Any = "0",
    actions: list[str] | None = None,
    hidden: list[str] | None = None,
    num_envs: int | None = None,
) -> Any:
    """The simulator of the default model in `run_dir`: a `PatientEnv`, or with `num_envs`
    a `VectorPatientEnv` stepping that many patients at once. `hidden` variables are left
    out of the observations (as in the export), not out of the reward."""
    model = HealthGym.load(run_dir)
    kw = {"reward": reward, "actions": actions, "hidden": hidden}
    if num_envs is None:
        return PatientEnv(model, **kw)
    return VectorPatientEnv(model, num_envs, **kw)


class Simulator:
    """Patients drawn step by step from a default model, treatments set from outside; what
    the single and the vector environment (and the fidelity report) share."""

    def __init__(
        self,
        model: HealthGym,
        *,
        reward: Any = "0",
        actions: list[str] | None = None,
        hidden: list[str] | None = None,
    ) -> None:
        net, tok = model._fitted()
        self.net, self.tok, self.temperature = net.eval(), tok, model.config.temperature
        self.hold = model.config.last_value  # values held while tokens repeat, as in sample
        schema = tok.schema
        self.actions = list(actions) if actions else [v.name for v in schema.actions]
        if not self.actions:
            raise ValueError(
                "no action variable: give actions=[...] or train on a schema with role: action"
            )
        order = [c.name for c in tok.dynamic_columns]
        tail = order[len(order) - len(self.actions) :]
        if sorted(tail) != sorted(self.actions):
            raise ValueError(
                f"the run's model draws {self.actions} before other variables of a step; "
                "mark them role: action in the schema and train again (treatments come last "
                "within a step, so the next state can follow the chosen treatment)"
            )
        for name in self.actions:
            if schema[name].kind == "real":
                raise ValueError(f"action {name!r} is real: make it categorical (bins) to act")
        self.levels = {c.name: c.values for c in tok.dynamic_columns if c.name in self.actions}
        sizes = [len(self.levels[a]) for a in self.actions]
        self.action_space = (
            gym.spaces.Discrete(sizes[0]) if len(sizes) == 1 else gym.spaces.MultiDiscrete(sizes)
        )
        medians = {c.name: _median(c) for c in [*tok.static_columns, *tok.dynamic_columns]}
        self.layout = ObservationLayout.of(schema, [*self.actions, *(hidden or [])], medians)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (len(self.layout.names),), np.float32
        )
        self.reward = Reward(reward, schema.names)
        self.longest = tok.max_length
        self.width = [len(c.vocab) for c in tok.dynamic_columns]
        self.first_action_token = sum(self.width) - sum(
            len(c.vocab) for c in tok.dynamic_columns if c.name in self.actions
        )

    # ---- patients ----------------------------------------------------------------------------
    def _begin(self, n: int, rng: torch.Generator, np_rng: np.random.Generator, static: Any):
        """Draw `n` patients' statics and lengths (at least 2 steps) and their first state."""
        given = self.net.statics.unknown(n, torch.device("cpu"))
        for name, value in (static or {}).items():
            column, at = self.tok.column_at(name)
            given[:, at : at + len(column.vocab)] = torch.as_tensor(column.token_of(value))
        with torch.no_grad():
            tokens = draw_statics(self.net.statics, given, rng, self.temperature)
            for _ in range(100):  # a stay of one step has no transition: draw the length again
                short = tokens[:, -1] == 0
                if not short.any():
                    break
                again = given.clone()
                again[short, -1] = self.net.statics.vocab[-1]
                tokens[short] = draw_statics(self.net.statics, again[short], rng, self.temperature)
            tokens[:, -1] = tokens[:, -1].clamp(min=1)
        self.static_tokens = tokens
        self.lengths = (tokens[:, -1] + 1).numpy()
        self.tokens = torch.zeros(n, int(self.lengths.max()), sum(self.width), dtype=torch.long)
        statics = self.tok.decode_columns(self.tok.static_columns, tokens[:, :-1].numpy(), np_rng)
        self.static_values = pd.DataFrame(statics)
        self.history: list[pd.DataFrame] = []
        self.t = 0
        self._draw_state(rng, np_rng)

    def draw_state(self, static: torch.Tensor, prefix: torch.Tensor, rng: torch.Generator) -> None:
        """Draw, in place, the state tokens of the last step of `prefix` (B, t + 1, D) given
        the steps before it (treatments included) and the statics (B, S)."""
        t, sequence = prefix.shape[1] - 1, self.net.sequence
        with torch.no_grad():
            for j in range(self.first_action_token):
                logits = sequence.last_logits(static, prefix)[:, j, : sequence.vocab[j]]
                probs = torch.softmax(logits.float() / self.temperature, dim=-1)
                prefix[:, t, j] = torch.multinomial(probs, 1, generator=rng).squeeze(1)

    def _draw_state(self, rng: torch.Generator, np_rng: np.random.Generator) -> None:
        """Draw the state of step t given everything before, then decode it."""
        t = self.t
        prefix = self.tokens[:, : t + 1]
        self.draw_state(self.static_tokens, prefix, rng)
        values = self.tok.decode_columns(
            self.tok.dynamic_columns, self.tokens[:, t].numpy(), np_rng
        )
        if self.hold and t > 0:  # `Tokenizer.inverse_transform(hold=True)`, one step at a time
            n = len(self.lengths)
            for c in self.tok.dynamic_columns:
                if c.kind == "bins":
                    _, at = self.tok.column_at(c.name)
                    steps = self.tokens[:, : t + 1, at : at + len(c.vocab)].numpy()
                    x = np.stack([*(f[c.name] for f in self.history), values[c.name]], 1)
                    x = held(x.ravel(), steps.reshape(n * (t + 1), -1), np.arange(n).repeat(t + 1))
                    values[c.name] = x.reshape(n, t + 1)[:, t]
        self.history.append(pd.DataFrame(values))

    def _act(self, action: np.ndarray) -> None:
        """Set the treatment tokens of step t (level indices, (n, A))."""
        for k, name in enumerate(self.actions):
            column, at = self.tok.column_at(name)
            tokens = np.asarray([column.token_of(column.values[i]) for i in action[:, k]])
            self.tokens[:, self.t, at : at + len(column.vocab)] = torch.as_tensor(tokens)
            self.history[-1][name] = [column.values[i] for i in action[:, k]]

    def _table(self) -> pd.DataFrame:
        """The patients' states so far as a long table, declared constraints applied."""
        n, schema = len(self.lengths), self.tok.schema
        steps = []
        for t, frame in enumerate(self.history):
            rows = pd.concat([self.static_values, frame.reset_index(drop=True)], axis=1)
            rows[schema.id], rows[schema.time] = np.arange(n), self.tok.time_origin + t
            steps.append(rows)
        table = pd.concat(steps).sort_values([schema.id, schema.time], kind="stable")
        for v in schema.variables:
            if v.name not in table:
                table[v.name] = None
        return enforce(table.reset_index(drop=True), schema)

    def _observe(self) -> tuple[np.ndarray, pd.DataFrame]:
        """(n, d) observations of step t and the table (carried forward) they come from."""
        schema = self.tok.schema
        table = self._table()
        filled = table.groupby(schema.id, sort=False).ffill()
        filled[schema.id] = table[schema.id].to_numpy()
        rows = filled[filled[schema.time] == self.tok.time_origin + self.t]
        measured = table.loc[rows.index].notna()
        return self.layout.encode(rows, measured), filled

    def _advance(self, action: np.ndarray, rng: torch.Generator, np_rng: np.random.Generator):
        """Act at step t, draw step t + 1: (observations, rewards, terminated, truncated)."""
        self._act(action)
        _, before = self._observe()
        self.t += 1
        self._draw_state(rng, np_rng)
        obs, after = self._observe()
        time = self.tok.schema.time
        now = before[before[time] == self.tok.time_origin + self.t - 1].reset_index(drop=True)
        nxt = after[after[time] == self.tok.time_origin + self.t].reset_index(drop=True)
        done = self.t == self.lengths - 1
        reward = self.reward(now, nxt, done)
        reward = np.where(np.isfinite(reward), reward, 0.0)
        cut = self.lengths == self.longest
        return obs, reward, done & ~cut, done & cut


class PatientEnv(Simulator, gym.Env):
    """One simulated patient at a time (a gymnasium.Env)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super(Simulator, self).reset(seed=seed)  # gymnasium seeds self.np_random
        self._rng = torch.Generator().manual_seed(int(self.np_random.integers(2**63)))
        self._begin(1, self._rng, self.np_random, (options or {}).get("static"))
        obs, _ = self._observe()
        return obs[0], {"length": int(self.lengths[0]), "static": self._static_info()}

    def step(self, action: Any):
        a = np.asarray(action, dtype=np.int64).reshape(1, -1)
        if not self.action_space.contains(
            np.asarray(action, dtype=np.int64).reshape(() if len(self.actions) == 1 else (-1,))
        ):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        obs, reward, terminated, truncated = self._advance(a, self._rng, self.np_random)
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def _static_info(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in self.static_values.iloc[0].items()}


class VectorPatientEnv(Simulator):
    """`num_envs` simulated patients stepped together (one model call per token column).

    ``reset(seed=)`` -> observations (n, d); ``step(actions (n,) or (n, A))`` -> observations,
    rewards, terminated, truncated, info; a finished patient is replaced by a new one on the
    next step (auto-reset), its final observation in ``info["final_observation"]``.
    """

    def __init__(
        self,
        model: HealthGym,
        num_envs: int,
        *,
        reward: Any = "0",
        actions: list[str] | None = None,
        hidden: list[str] | None = None,
    ) -> None:
        super().__init__(model, reward=reward, actions=actions, hidden=hidden)
        self.num_envs = num_envs

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        self._np = np.random.default_rng(seed)
        self._rng = torch.Generator().manual_seed(int(self._np.integers(2**63)))
        self._begin(self.num_envs, self._rng, self._np, None)
        self._done = np.zeros(self.num_envs, dtype=bool)
        obs, _ = self._observe()
        return obs, {"length": self.lengths.copy()}

    def step(self, actions: Any):
        if self._done.all():  # every patient finished: a new cohort of patients
            obs, info = self.reset(seed=int(self._np.integers(2**31)))
            zeros = np.zeros(self.num_envs)
            return obs, zeros, self._done.copy(), self._done.copy(), info
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs, -1)
        live = ~self._done
        obs, reward, terminated, truncated = self._advance(a, self._rng, self._np)
        reward = np.where(live, reward, 0.0)
        self._done |= terminated | truncated
        return obs, reward, terminated & live, truncated & live, {}


def _median(column: Any) -> float:
    """A real token column's training median (0 for levels: unused)."""
    if column.kind == "bins":
        return float(np.interp(0.5, np.linspace(0, 1, len(column.grid)), column.grid))
    if column.kind == "values":
        return float(np.median(np.asarray(column.values, dtype=float)))
    return 0.0


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
