"""docs/rl.md's worked examples (d3rlpy offline, stable-baselines3 online, a CleanRL-style
loop on the vector env) run as written, on a simulator whose best treatment is known:
ventilating brings the next heart rate to ~70 (reward 0), not ventilating to ~110 (reward -1),
so each trained policy must ventilate (issue 29)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import treated_cohort, treated_run

pytest.importorskip("gymnasium")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "rl.md"
REWARD = "-(hr_next > 100)"


def example(name: str) -> str:
    """The Python block after ``<!-- example: NAME -->`` in docs/rl.md."""
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"no example {name!r} in {DOCS}"
    return match.group(1)


def run_example(name: str, run: Path, folder: Path, monkeypatch) -> dict:
    """Execute the example with its first line (the user's settings) set to this test's."""
    first, rest = example(name).split("\n", 1)
    assert first.startswith("run, datasets, reward = ")
    monkeypatch.chdir(folder)
    namespace: dict = {}
    code = f"run, datasets, reward = {str(run)!r}, 'rl-data', {REWARD!r}\n{rest}"
    exec(compile(code, f"docs/rl.md:{name}", "exec"), namespace)  # our own docs, not input
    return namespace


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return treated_run(tmp_path_factory.mktemp("examples") / "run")


def observations(run: Path) -> np.ndarray:
    """Observations of simulated patients (the policies' inputs)."""
    from healthgym.rl import env

    many = env.make(run, reward=REWARD, num_envs=200)
    return many.reset(seed=5)[0]


def test_d3rlpy_cql_learns_to_ventilate_offline(run, tmp_path, monkeypatch):
    pytest.importorskip("d3rlpy")
    treated_cohort(200, seed=3).to_csv(tmp_path / "train.csv")
    ns = run_example("d3rlpy", run, tmp_path, monkeypatch)
    assert ns["dataset"].size() > 100
    assert ns["cql"].predict(observations(run)).mean() > 0.8


def test_stable_baselines3_ppo_learns_to_ventilate_online(run, tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    ns = run_example("stable-baselines3", run, tmp_path, monkeypatch)
    actions, _ = ns["agent"].predict(observations(run), deterministic=True)
    assert actions.mean() > 0.8


def test_a_cleanrl_style_loop_on_the_vector_env_learns_to_ventilate(run, tmp_path, monkeypatch):
    ns = run_example("cleanrl", run, tmp_path, monkeypatch)
    obs = observations(run)
    with torch.no_grad():
        logits = ns["policy"](torch.as_tensor((obs - ns["mean"]) / ns["scale"]))
    assert torch.softmax(logits, 1)[:, 1].mean() > 0.8
