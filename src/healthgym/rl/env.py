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

from ..data.constraints import StepConstraints
from ..models.healthgym.model import HealthGym
from ..models.healthgym.sampler import StepDrawer, draw_statics
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
        self.action_codes = {}  # per treatment: where its tokens go, each level's, its levels
        for name in self.actions:
            column, at = tok.column_at(name)
            tokens = torch.as_tensor(np.stack([column.token_of(v) for v in column.values]))
            self.action_codes[name] = (at, tokens, np.asarray(column.values, dtype=object))
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
    # A step costs the same whatever came before: the model's recurrent state is carried
    # (`StepDrawer`), and values are held, constrained and carried forward one step at a time
    # from per-patient arrays (no table of the whole history is rebuilt).
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
        self.drawer = StepDrawer(self.net.sequence, tokens, self.temperature)
        statics = self.tok.decode_columns(self.tok.static_columns, tokens[:, :-1].numpy(), np_rng)
        schema = self.tok.schema
        self.constraints = StepConstraints(schema)
        self.static_values = self.constraints.apply(statics, first=True)
        self.repeats = {}  # a real's last observed (tokens, value), for holding it (`held`)
        self.filled = {v.name: np.full(n, None, dtype=object) for v in schema.dynamic}
        self.history: list[dict[str, np.ndarray]] = []
        self.t = 0
        self._draw_state(rng, np_rng)

    def draw_state(self, static: torch.Tensor, prefix: torch.Tensor, rng: torch.Generator) -> None:
        """Draw, in place, the state tokens of the last step of `prefix` (B, t + 1, D) given
        the steps before it (treatments included) and the statics (B, S): for histories that
        were not drawn here (the fidelity report's real patients)."""
        t, sequence = prefix.shape[1] - 1, self.net.sequence
        with torch.no_grad():
            for j in range(self.first_action_token):
                logits = sequence.last_logits(static, prefix)[:, j, : sequence.vocab[j]]
                probs = torch.softmax(logits.float() / self.temperature, dim=-1)
                prefix[:, t, j] = torch.multinomial(probs, 1, generator=rng).squeeze(1)

    def _draw_state(self, rng: torch.Generator, np_rng: np.random.Generator) -> None:
        """Draw the state of step t given everything before, then decode it."""
        t, n, stop = self.t, len(self.lengths), self.first_action_token
        u = torch.rand(stop, n, generator=rng).double()
        self.tokens[:, t, :stop] = self.drawer.draw(u, stop)
        step = self.tokens[:, t].numpy()
        values = self.tok.decode_columns(self.tok.dynamic_columns, step, np_rng)
        if self.hold:  # `Tokenizer.inverse_transform(hold=True)`, one step at a time
            for c in self.tok.dynamic_columns:
                if c.kind == "bins":
                    _, at = self.tok.column_at(c.name)
                    values[c.name] = self._held(
                        c.name, values[c.name], step[:, at : at + len(c.vocab)]
                    )
        self._record(values)

    def _held(self, name: str, x: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """`x` where an observed value's tokens repeat its last observed value's: that value."""
        observed = ~np.isnan(x)
        if name in self.repeats:
            last_tokens, last_x = self.repeats[name]
            same = observed & (tokens == last_tokens).all(1) & ~np.isnan(last_x)
            x = np.where(same, last_x, x)
            self.repeats[name] = (
                np.where(observed[:, None], tokens, last_tokens),
                np.where(observed, x, last_x),
            )
        else:
            self.repeats[name] = (tokens.copy(), np.where(observed, x, np.nan))
        return x

    def _record(self, values: dict[str, Any]) -> None:
        """Step t's values (constrained; treatments missing until set), carried forward."""
        values = self.constraints.apply(values, first=self.t == 0)
        for name in self.actions:
            values[name] = np.full(len(self.lengths), None, dtype=object)
        self.history.append(values)
        self.raw = values
        self._carry(values)

    def _carry(self, values: dict[str, Any]) -> None:
        for name, x in values.items():
            present = ~pd.isna(x)
            self.filled[name] = np.where(present, x, self.filled[name])

    def _act(self, action: np.ndarray) -> None:
        """Set the treatment tokens and values of step t (level indices, (n, A))."""
        levels = {}
        for k, name in enumerate(self.actions):
            at, tokens, values = self.action_codes[name]
            self.tokens[:, self.t, at : at + tokens.shape[1]] = tokens[action[:, k]]
            levels[name] = values[action[:, k]]
        levels = self.constraints.apply(levels, first=self.t == 0)
        self.raw.update(levels)
        self._carry(levels)

    def _state(self) -> dict[str, np.ndarray]:
        """Step t's carried-forward values, statics included, by variable."""
        return {**self.static_values, **self.filled}

    def _observe(self) -> np.ndarray:
        """(n, d) observations of step t."""
        measured = {k: ~pd.isna(x) for k, x in {**self.static_values, **self.raw}.items()}
        return self.layout.encode(self._state(), measured)

    def _advance(self, action: np.ndarray, rng: torch.Generator, np_rng: np.random.Generator):
        """Act at step t, draw step t + 1: (observations, rewards, terminated, truncated)."""
        self._act(action)
        now = self._state()
        self.drawer.commit(self.tokens[:, self.t])
        self.t += 1
        self._draw_state(rng, np_rng)
        obs, nxt = self._observe(), self._state()
        done = self.t == self.lengths - 1
        reward = self.reward(self._frame(now, self.t - 1), self._frame(nxt, self.t), done)
        reward = np.where(np.isfinite(reward), reward, 0.0)
        cut = self.lengths == self.longest
        return obs, reward, done & ~cut, done & cut

    def _frame(self, values: dict[str, np.ndarray], t: int) -> Any:
        """A step's values for the reward: as they are for an expression, as a table (id and
        time columns included, as the export's) for a callable."""
        if not callable(self.reward.spec):
            return values
        schema, n = self.tok.schema, len(self.lengths)
        frame = pd.DataFrame({schema.id: np.arange(n), schema.time: self.tok.time_origin + t})
        return pd.concat([frame, pd.DataFrame(values)], axis=1)


class PatientEnv(Simulator, gym.Env):
    """One simulated patient at a time (a gymnasium.Env)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super(Simulator, self).reset(seed=seed)  # gymnasium seeds self.np_random
        self._rng = torch.Generator().manual_seed(int(self.np_random.integers(2**63)))
        self._begin(1, self._rng, self.np_random, (options or {}).get("static"))
        return self._observe()[0], {"length": int(self.lengths[0]), "static": self._static_info()}

    def step(self, action: Any):
        a = np.asarray(action, dtype=np.int64).reshape(1, -1)
        if not self.action_space.contains(
            np.asarray(action, dtype=np.int64).reshape(() if len(self.actions) == 1 else (-1,))
        ):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        obs, reward, terminated, truncated = self._advance(a, self._rng, self.np_random)
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def _static_info(self) -> dict[str, Any]:
        return {k: _plain(v[0]) for k, v in self.static_values.items()}


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
        return self._observe(), {"length": self.lengths.copy()}

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
