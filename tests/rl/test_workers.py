"""The vector environment stepped in worker processes (`rl.workers`, issue 29): the same
spaces, checks, auto-reset and treatment response as one process's, reproducible by seed."""

import numpy as np
import pytest

from helpers import treated_run

gym = pytest.importorskip("gymnasium")
from healthgym.rl import env as simulator  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return treated_run(tmp_path_factory.mktemp("workers"))


@pytest.fixture(scope="module")
def envs(run):
    envs = simulator.make(run, num_envs=401, workers=2, reward="-(hr_next > 100)")
    yield envs
    envs.close()


def test_it_is_the_vector_env_of_one_process_split(run, envs):
    one = simulator.make(run, num_envs=401, reward="-(hr_next > 100)")
    assert isinstance(envs, gym.vector.VectorEnv) and envs.sizes == [201, 200]
    assert envs.single_action_space == one.single_action_space
    assert envs.single_observation_space == one.single_observation_space
    assert envs.observation_space.shape == (401, 3) and envs.action_space.shape == (401,)
    first, info = envs.reset(seed=3, options={"static": {"sex": "F"}})
    again, _ = envs.reset(seed=3, options={"static": {"sex": "F"}})
    np.testing.assert_array_equal(first, again)
    assert info["_length"].all() and len(info["length"]) == 401
    assert (first[:, :2] == [1.0, 0.0]).all()  # the options reach both shards
    other, _ = envs.reset(seed=4)
    assert not np.array_equal(other, first)


def test_the_next_state_follows_the_treatment_in_every_shard(envs):
    after = {}
    for action in (0, 1):
        envs.reset(seed=11)
        obs, *_ = envs.step(np.full(401, action))
        after[action] = obs[:, 2]
    for half in (slice(0, 201), slice(201, None)):  # the data: hr 110 without, 70 with
        assert after[0][half].mean() - after[1][half].mean() > 25


def test_finished_patients_are_replaced_on_the_next_step(envs):
    envs.reset(seed=0)
    ended, restarted = np.zeros(401, dtype=bool), 0
    for _ in range(12):  # stays are 3-6 steps: every patient ends and is replaced
        obs, reward, term, trunc, info = envs.step(envs.action_space.sample())
        assert obs.shape == (401, 3) and reward.shape == term.shape == (401,)
        if ended.any():
            assert (reward[ended] == 0).all() and not (term | trunc)[ended].any()
            assert info["_length"][ended].all() and not info["_length"][~ended].any()
            assert (info["length"][ended] >= 2).all()
            restarted += ended.sum()
        ended = term | trunc
    assert restarted >= 401


def test_refusals(run, envs):
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"level index 0\.\.1 \(levels \[0, 1\]\), got 2"):
        envs.step(np.full(401, 2))
    with pytest.raises(ValueError, match=r"401 x 1 level indices \(vent\)"):
        envs.step(np.zeros(400))
    with pytest.raises(ValueError, match="workers must be a positive number"):
        simulator.make(run, num_envs=4, workers=0)
    with pytest.raises(ValueError, match="give num_envs too"):
        simulator.make(run, workers=2)
    with pytest.raises(ValueError, match=r"num_envs must be a number of patients >= workers"):
        simulator.make(run, num_envs=1, workers=2)
    with pytest.raises(ValueError, match=r"names \[.nope_next.\]"):  # a shard's error, raised here
        simulator.make(run, num_envs=4, workers=2, reward="nope_next")
    fresh = simulator.make(run, num_envs=4, workers=2)
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        fresh.step(np.zeros(4))
    fresh.close()
    fresh = simulator.make(run, num_envs=4, workers=2)
    fresh._processes[1].kill()
    fresh._processes[1].join()
    with pytest.raises(RuntimeError, match="a worker process ended"):
        fresh.reset(seed=0)
    fresh.close()
