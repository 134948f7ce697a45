"""Reinforcement learning on cohorts: the simulator (a gymnasium env drawing from a trained
model), the offline export (Minari), the observations and rewards both share, and the
simulator's fidelity report against held-out patients."""

#: The gymnasium id of the simulator (`gymnasium.make(ENV_ID, run=RUN_DIR, ...)`), registered
#: by `healthgym.rl.env` and named in Minari datasets exported beside a run.
ENV_ID = "healthgym/Patient-v0"
