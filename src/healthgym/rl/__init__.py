"""Reinforcement learning on cohorts: the simulator (a gymnasium env drawing from a trained
model), the offline export (Minari), the observations and rewards both share, and the
simulator's fidelity report against held-out patients."""
