"""Patients drawn step by step from a trained default model, treatments set from outside: what
the gymnasium environments (`healthgym.rl.env`) and the fidelity report share.

A step costs the same whatever came before: the model's recurrent state is carried
(`StepDrawer`), and values are held, constrained and carried forward one step at a time from
per-patient arrays. Each patient has its own step, so a finished stay can be replaced by a new
one while the others go on (`restart`, the vector environment's auto-reset).

The model learned the recorded care: what it simulates under other treatments is what the
observational data suggests, not a causal effect (docs/rl.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from ..data.cohort import Cohort
from ..data.constraints import StepConstraints
from ..models.healthgym.model import HealthGym
from ..models.healthgym.row_mask import RowMask
from ..models.healthgym.sampler import StepDrawer, draw_statics
from .observations import ObservationLayout
from .rewards import Reward, warn_of_fixed_ends, warn_of_leaks
from .transitions import scaling_of_run


class Simulator:
    """`n` patients (`begin`), each at its own step; `advance` sets the treatments of their
    current step and draws the next state."""

    def __init__(
        self,
        model: HealthGym,
        *,
        reward: Any = "0",
        actions: list[str] | None = None,
        hidden: list[str] | None = None,
        previous: bool = False,
        normalize: bool = False,
    ) -> None:
        net, tok = model._fitted()
        self.net, self.tok, self.temperature = net.eval(), tok, model.config.temperature
        # values held while their tokens repeat, as in sample: each binned real's token span
        self.hold = model.config.last_value
        self.held: list[tuple[str, slice]] = []
        for c in tok.dynamic_columns if self.hold else []:
            if c.kind == "bins":
                at = tok.column_at(c.name)[1]
                self.held.append((c.name, slice(at, at + len(c.vocab))))
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
        values = {c.name: c.values for c in tok.dynamic_columns}
        self.levels = {name: values[name] for name in self.actions}  # in the actions' order
        self.action_codes = {}  # per treatment: where its tokens go, each level's, its levels
        for name in self.actions:
            column, at = tok.column_at(name)
            tokens = torch.as_tensor(np.stack([column.token_of(v) for v in column.values]))
            self.action_codes[name] = (at, tokens, np.asarray(column.values, dtype=object))
        medians = {c.name: _median(c) for c in [*tok.static_columns, *tok.dynamic_columns]}
        self.hidden = list(hidden or [])
        back = {a: self.levels[a] for a in self.actions} if previous else None
        self.layout = ObservationLayout.of(schema, [*self.actions, *self.hidden], medians, back)
        self.scaling = None  # (mean, scale) of each observation column, `normalize`
        if normalize:
            self.scaling = scaling_of_run(model, self.actions, self.hidden, previous)
        self.reward = Reward(reward, schema.names)
        warn_of_leaks(self.reward, schema, self.hidden)
        self.longest = tok.max_length
        # the model draws where each stay ends, given the treatments (`end="drawn"`), or the
        # stay's length is drawn with its statics at `begin`
        self.ends = self.net.sequence.ends
        if not self.ends:
            outcomes = [i.partition("=")[0] for i in schema.rows.last]
            warn_of_fixed_ends(self.reward, [v.name for v in schema.static], outcomes)
        self.width = sum(len(c.vocab) for c in tok.dynamic_columns)
        self.first_action_token = self.width - sum(
            len(c.vocab) for c in tok.dynamic_columns if c.name in self.actions
        )

    # ---- actions -------------------------------------------------------------------------------
    def check_actions(self, actions: Any, n: int) -> np.ndarray:
        """(n, A) level indices from what a policy gave (`check_actions`)."""
        return check_actions(actions, n, self.levels)

    # ---- patients ------------------------------------------------------------------------------
    def begin(self, n: int, rng: torch.Generator, np_rng: np.random.Generator, static: Any) -> None:
        """`n` new patients (statics, lengths of at least 2 steps) and their first state."""
        self._start(self._statics(n, rng, static), np_rng)
        self._draw_state(rng, np_rng)

    def resume(self, cohort: Cohort, step: int, np_rng: np.random.Generator) -> None:
        """The real patients of `cohort`, each at its step `step` as recorded (its state;
        the steps before read, treatments included): `advance` then treats them as the
        caller chooses and draws what follows (counterfactual rollouts from real histories).
        Every patient needs more than `step` steps. A model that draws the length with the
        statics (`end="length"`) reads each patient's recorded length, which knows the
        future: resume a `--preset simulator` run."""
        cohort = Cohort(cohort.table, self.tok.schema)
        short = int((cohort.lengths <= step).sum())
        if short:
            raise ValueError(f"{short} patients have {step} steps or fewer: none to resume at")
        tokens = self.tok.transform(cohort)
        dynamic = torch.from_numpy(tokens.dynamic)
        self._start(torch.from_numpy(tokens.static), np_rng)
        for t in range(step):
            self.drawer.read(dynamic[:, t])
        self.t[:] = step
        self.step_tokens[:, : self.first_action_token] = dynamic[:, step, : self.first_action_token]
        self._take_state(np_rng)

    def _start(self, tokens: torch.Tensor, np_rng: np.random.Generator) -> None:
        """Patients of static tokens (n, S) at their first step, no state drawn yet."""
        n = len(tokens)
        self.static_tokens = tokens
        self.lengths = (tokens[:, -1] + 1).numpy()
        self.t = np.zeros(n, dtype=np.int64)
        self.before = np.full((n, len(self.actions)), -1)  # the treatments one step back
        self.step_tokens = torch.zeros(n, self.width, dtype=torch.long)
        self.drawer = StepDrawer(  # the schema's rows block kept in every drawn state
            self.net.sequence,
            tokens,
            self.temperature,
            mask=RowMask.of(self.tok),
            lengths=None if self.ends else tokens[:, -1] + 1,  # else the steps draw the end
            shortest=2,
        )
        self.constraints = StepConstraints(self.tok.schema)
        self.static_values = self._static_values(tokens, np_rng)
        self.repeats: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # a real's last observed
        self.filled = {  # reals as floats (NaN: none yet), levels as objects (None)
            v.name: np.full(n, np.nan) if v.kind == "real" else np.full(n, None, dtype=object)
            for v in self.tok.schema.dynamic
        }

    def _restart(
        self, rows: np.ndarray, rng: torch.Generator, np_rng: np.random.Generator, static: Any
    ) -> None:
        """New patients in ``rows`` (bool, n): their stays begin (state at step 0, not drawn)."""
        k = int(rows.sum())
        tokens = self._statics(k, rng, static)
        self.static_tokens[rows] = tokens
        self.lengths[rows] = (tokens[:, -1] + 1).numpy()
        self.drawer.restart(torch.as_tensor(rows), tokens)
        self.before[rows] = -1
        self.constraints.restart(rows)
        for name, x in self._static_values(tokens, np_rng).items():
            self.static_values[name][rows] = x
        for _, values in self.repeats.values():
            values[rows] = np.nan
        for x in self.filled.values():
            x[rows] = np.nan if x.dtype.kind == "f" else None

    def _statics(self, n: int, rng: torch.Generator, static: Any) -> torch.Tensor:
        """Static tokens (n, S) of new patients (`static`: values to give them)."""
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
        return tokens

    def _static_values(
        self, tokens: torch.Tensor, np_rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        values = self.tok.decode_columns(self.tok.static_columns, tokens[:, :-1].numpy(), np_rng)
        return self.constraints.apply(values, first=True)

    def _draw_state(self, rng: torch.Generator, np_rng: np.random.Generator) -> None:
        """Draw every patient's state at its current step given its stay so far; decode it."""
        n, stop = len(self.lengths), self.first_action_token
        u = torch.rand(stop + self.ends, n, generator=rng).double()  # the end's: the last
        self.step_tokens.zero_()
        self.step_tokens[:, :stop] = self.drawer.draw(u, stop)
        self._take_state(np_rng)

    def _take_state(self, np_rng: np.random.Generator) -> None:
        """Decode the current step's state tokens (held, constrained, carried forward)."""
        n, step = len(self.lengths), self.step_tokens.numpy()
        values = self.tok.decode_columns(self.tok.dynamic_columns, step, np_rng)
        for name, span in self.held:  # `Tokenizer.inverse_transform(hold=True)`, a step
            values[name] = self._held(name, values[name], step[:, span])
        values = self.constraints.apply(values, first=self.t == 0)
        for name in self.actions:
            values[name] = np.full(n, None, dtype=object)
        self.raw = values  # this step's values, not carried forward
        self._carry(values)

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

    def _carry(self, values: dict[str, Any]) -> None:
        for name, x in values.items():
            self.filled[name] = np.where(pd.isna(x), self.filled[name], x)

    def _act(self, action: np.ndarray) -> None:
        """Set the treatment tokens and values of the current step (level indices, (n, A))."""
        levels = {}
        for k, name in enumerate(self.actions):
            at, tokens, values = self.action_codes[name]
            self.step_tokens[:, at : at + tokens.shape[1]] = tokens[action[:, k]]
            levels[name] = values[action[:, k]]
        levels = self.constraints.apply(levels, first=self.t == 0)
        self.raw.update(levels)
        self._carry(levels)

    def finished(self) -> np.ndarray:
        """(n,) bool: the current step is the stay's last."""
        if self.ends:
            return self.drawer.ended.numpy() | (self.t >= self.longest - 1)
        return self.t >= self.lengths - 1

    def length_info(self) -> dict[str, np.ndarray]:
        """The stays' lengths where drawn at `begin` (the `info` of a reset); none where the
        steps draw the end."""
        return {} if self.ends else {"length": self.lengths.copy()}

    def state(self) -> dict[str, np.ndarray]:
        """The current step's carried-forward values, statics included, by variable."""
        return {**self.static_values, **self.filled}

    def observe(self) -> np.ndarray:
        """(n, d) observations of the current step."""
        measured = {k: ~pd.isna(x) for k, x in {**self.static_values, **self.raw}.items()}
        obs = self.layout.encode(self.state(), measured, self.before)
        if self.scaling is None:
            return obs
        return ((obs - self.scaling[0]) / self.scaling[1]).astype(np.float32)

    def advance(
        self,
        action: np.ndarray,
        rng: torch.Generator,
        np_rng: np.random.Generator,
        restart: np.ndarray | None = None,
        static: Any = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Treat at the current step, draw the next: (observations, rewards, terminated,
        truncated). ``restart`` rows (bool, n) begin new stays instead (given ``static``
        values): their treatment is ignored, they get their first state, reward 0, and
        neither end (the vector environment's auto-reset)."""
        restarted = np.zeros(len(self.lengths), bool) if restart is None else restart
        self._act(action)
        self.before = action.copy()
        now = self.state()
        self.drawer.commit(self.step_tokens)
        self.t = np.where(restarted, 0, self.t + 1)
        if restarted.any():
            self._restart(restarted, rng, np_rng, static)
        self._draw_state(rng, np_rng)
        obs, nxt = self.observe(), self.state()
        if self.ends:  # drawn; at the longest stay trained on the drawer ends it (cut)
            done, cut = self.drawer.ended.numpy() & ~restarted, self.t == self.longest - 1
        else:
            done, cut = (self.t == self.lengths - 1) & ~restarted, self.lengths == self.longest
        reward = self.reward(self._frame(now, self.t - 1), self._frame(nxt, self.t), done)
        reward = np.where(np.isfinite(reward) & ~restarted, reward, 0.0)
        return obs, reward, done & ~cut, done & cut

    def _frame(self, values: dict[str, np.ndarray], t: np.ndarray) -> Any:
        """A step's values for the reward: as they are for an expression, as a table (id and
        time columns included, as the export's) for a callable."""
        if not callable(self.reward.spec):
            return values
        schema, n = self.tok.schema, len(self.lengths)
        frame = pd.DataFrame({schema.id: np.arange(n), schema.time: self.tok.time_origin + t})
        return pd.concat([frame, pd.DataFrame(values)], axis=1)


def check_actions(actions: Any, n: int, levels: dict[str, list]) -> np.ndarray:
    """(n, A) level indices from what a policy gave for `n` patients and the treatments
    `levels` (name -> its levels), or a ValueError naming the treatment and its levels (a
    float that is not whole, a level out of range, a wrong shape)."""
    a, names = np.asarray(actions), list(levels)
    if a.size != n * len(names):
        raise ValueError(
            f"actions must be {n} x {len(names)} level indices ({', '.join(names)}), "
            f"got shape {a.shape}"
        )
    a = a.reshape(n, len(names))
    if a.dtype.kind not in "iub" and not (
        a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a))
    ):
        raise ValueError(f"actions must be whole level indices, got {actions!r}")
    a = a.astype(np.int64)
    for k, name in enumerate(names):
        bad = (a[:, k] < 0) | (a[:, k] >= len(levels[name]))
        if bad.any():
            raise ValueError(
                f"action for {name} must be a level index 0..{len(levels[name]) - 1} "
                f"(levels {levels[name]}), got {a[bad, k][0]}"
            )
    return a


def _median(column: Any) -> float:
    """A real token column's training median (0 for levels: unused)."""
    if column.kind == "bins":
        return float(np.interp(0.5, np.linspace(0, 1, len(column.grid)), column.grid))
    if column.kind == "values":
        return float(np.median(np.asarray(column.values, dtype=float)))
    return 0.0
