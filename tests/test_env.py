"""The learned patient simulator: a gymnasium Env that follows the chosen treatment."""

import numpy as np
import pytest

import healthgym as hg

gym = pytest.importorskip("gymnasium")
from gymnasium.utils.env_checker import check_env  # noqa: E402

from healthgym.rl import env as simulator  # noqa: E402
from helpers import treated_cohort, treated_run  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return treated_run(tmp_path_factory.mktemp("sim"))


def test_it_is_a_gymnasium_env_reproducible_by_seed(run):
    env = simulator.make(run, reward="-(hr_next > 100)")
    check_env(env, skip_render_check=True)
    assert env.action_space == gym.spaces.Discrete(2)
    assert env.observation_space.shape == (3,)  # sex one-hot, hr; vent is the action

    def episode(seed):
        obs, info = env.reset(seed=seed)
        out, done = [obs], False
        while not done:
            obs, reward, term, trunc, _ = env.step(1)
            out.append(np.r_[obs, reward])
            done = term or trunc
        return np.concatenate(out), info["length"]

    a, b, c = episode(5), episode(5), episode(6)
    np.testing.assert_array_equal(a[0], b[0])
    assert len(a[0]) == 3 + 4 * (a[1] - 1)  # one transition fewer than steps
    assert not (len(a[0]) == len(c[0]) and np.array_equal(a[0], c[0]))
    obs, _ = env.reset(seed=1, options={"static": {"sex": "F"}})
    assert obs[:2].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"level index 0\.\.1"):
        env.step(2)


def test_the_next_state_follows_the_chosen_treatment(run):
    env = simulator.make(run, num_envs=400)
    hr_after = {}
    for action in (0, 1):
        env.reset(seed=11)
        obs, *_ = env.step(np.full(400, action))
        hr_after[action] = obs[:, 2].mean()
    assert hr_after[0] - hr_after[1] > 25, hr_after  # the data: 110 without, 70 with


def test_refusals(run, tmp_path):
    table = treated_cohort(20).table
    table["temp"] = np.round(np.random.default_rng(0).normal(37, 0.5, len(table)), 1)
    cohort = hg.Cohort(table, id="pid", time="t")
    hg.HealthGym(width=8, epochs=1).fit(cohort, tmp_path / "plain", progress=False)
    with pytest.raises(ValueError, match="no action variable"):
        simulator.make(tmp_path / "plain")
    with pytest.raises(ValueError, match="role: action"):
        simulator.make(tmp_path / "plain", actions=["vent"])
    with pytest.raises(ValueError, match="is real"):
        simulator.make(tmp_path / "plain", actions=["temp"])
    with pytest.raises(ValueError, match="names"):
        simulator.make(run, reward="__import__('os').system('true')")


def test_fidelity_report_on_held_out_patients(run, tmp_path):
    """Issue 28: the report rates the simulator beside a history-blind and a treatment-blind
    baseline, on effect magnitudes, and the baselines read worse."""
    from healthgym.rl.fidelity import simulator_fidelity

    holdout = treated_cohort(100, seed=1)
    report = simulator_fidelity(run, holdout, reward="-(hr_next > 100)", patients=300)
    sim = report.metrics["simulator"]
    assert sim["one_step"]["hr"]["all"] < 0.3  # an untrained model scores ~0.5 and worse
    grouped = sim["next_differences"]["hr (mean)"]["1"]
    assert grouped["observed"] == pytest.approx(-40, abs=5)
    assert grouped["low"] < grouped["observed"] < grouped["high"]
    assert grouped["predicted"] == pytest.approx(grouped["observed"], abs=10)
    what_if = sim["what_if"]["hr (mean)"]["1"]  # vent drawn at random: adjusted ~ raw
    assert what_if["observed"] == pytest.approx(-40, abs=5)
    assert what_if["predicted"] == pytest.approx(what_if["observed"], abs=10)
    assert report.metrics["treatment_blind"]["what_if"]["hr (mean)"]["1"]["predicted"] == 0
    readings = report.summary.set_index("key")["reading"]
    assert readings["simulator.what_if_agreement"] == "good"
    assert readings["simulator.next_mean_agreement"] == "good"
    assert readings["treatment_blind.what_if_agreement"] == "poor"
    assert readings["history_blind.next_mean_agreement"] == "poor"
    assert readings["history_blind.one_step_skill"] == "poor"
    assert sim["one_step_skill"] > 0.5
    assert report.value("simulator.return_gap") < 0.5
    assert (report.save(tmp_path / "fidelity")).exists()


def test_one_step_draws_are_listed_transition_by_transition(run):
    """The draws are made step by step for every patient at once; they come back patient by
    patient, aligned with the held-out transitions (checked on the recorded next level of a
    variable the model copies: vent is drawn as an action, hr follows it)."""
    import torch

    from healthgym.rl import one_step
    from healthgym.rl.simulator import Simulator

    sim = Simulator(hg.load(run))
    holdout = treated_cohort(30, seed=2)
    real = one_step.transitions_of(holdout, ["hr"], "vent")
    drawn = one_step.draw_next(sim, holdout, ["hr"], torch.Generator(), np.random.default_rng(0))
    assert len(drawn["recorded"]) == len(real.next)
    hr = drawn["recorded"]["hr"].astype(float)
    ventilated = real.level == 1  # hr ~70 after ventilation, ~110 without: row by row
    assert (hr[ventilated] < 90).mean() > 0.9 and (hr[~ventilated] > 90).mean() > 0.9


def test_one_step_logits_equal_the_full_forward(run):
    import torch

    model = hg.load(run)
    net, tok = model._fitted()
    tokens = tok.transform(treated_cohort(10, seed=2))
    static, dynamic = torch.from_numpy(tokens.static), torch.from_numpy(tokens.dynamic)
    with torch.no_grad():
        full = net.sequence(static, dynamic)
        for t in (1, 2, dynamic.shape[1]):
            logits = net.sequence.last_logits(static, dynamic[:, :t])  # heads and kernel
            for j, v in enumerate(net.sequence.vocab):
                torch.testing.assert_close(
                    logits[:, j, :v], full[j][:, t - 1], atol=1e-5, rtol=1e-5
                )


def test_a_value_is_held_while_its_tokens_repeat(run):
    """As `sample` (issue 15): the simulator keeps a real's value while its tokens repeat."""
    env = simulator.make(run, num_envs=64)
    env.reset(seed=3)
    column, at = env.sim.tok.column_at("hr")
    steps = []
    for k in range(4):
        if k:
            env.step(np.ones(64, dtype=int))
        tokens = env.sim.step_tokens[:, at : at + len(column.vocab)].numpy().copy()
        steps.append((env.sim.t.copy(), tokens, env.sim.raw["hr"].copy()))
    held = 0
    for (t0, tok0, hr0), (t1, tok1, hr1) in zip(steps, steps[1:], strict=False):
        same = (t1 == t0 + 1) & (tok1 == tok0).all(1) & ~np.isnan(hr0) & ~np.isnan(hr1)
        assert np.array_equal(hr1[same], hr0[same])
        held += same.sum()
    assert held > 0


def test_carried_state_draws_what_the_whole_history_would(run):
    """Issue 29: the step drawer (recurrent state carried) draws, from the same uniforms, the
    tokens the network gives when re-run over the whole history (`last_logits`)."""
    import torch

    from healthgym.models.healthgym.sampler import StepDrawer, pick

    model = hg.load(run)
    net, tok = model._fitted()
    tokens = tok.transform(treated_cohort(16, seed=4))
    static, dynamic = torch.from_numpy(tokens.static), torch.from_numpy(tokens.dynamic)
    drawer = StepDrawer(net.sequence, static, 1.0)
    u = torch.rand(dynamic.shape[1], len(net.sequence.vocab), 16, generator=torch.Generator())
    for t in range(dynamic.shape[1]):
        drawn = drawer.draw(u[t].double())
        prefix = dynamic[:, : t + 1].clone()
        with torch.no_grad():
            for j, v in enumerate(net.sequence.vocab):
                logits = net.sequence.last_logits(static, prefix)[:, j, :v]
                prefix[:, t, j] = pick(logits, u[t, j].double())
        assert torch.equal(drawn, prefix[:, t]), t
        drawer.commit(dynamic[:, t])  # the real step, as the fidelity report reads it


def test_the_vector_env_is_a_gymnasium_vector_env_with_next_step_autoreset(run):
    envs = gym.make_vec(
        "healthgym/Patient-v0", num_envs=32, run=str(run), reward="-(hr_next > 100)"
    )
    assert isinstance(envs, gym.vector.VectorEnv)
    assert envs.single_action_space == gym.spaces.Discrete(2)
    assert envs.single_observation_space.shape == (3,)
    assert envs.observation_space.shape == (32, 3) and envs.action_space.shape == (32,)
    obs, info = envs.reset(seed=0, options={"static": {"sex": "F"}})
    assert envs.observation_space.contains(obs) and info["_length"].all()
    ended = np.zeros(32, dtype=bool)
    restarted = 0
    for _ in range(12):  # stays are 3-6 steps: every patient ends and is replaced
        obs, reward, term, trunc, info = envs.step(envs.action_space.sample())
        assert obs.shape == (32, 3) and (obs[:, :2] == [1.0, 0.0]).all()  # replacements too
        if ended.any():  # last step's ended patients are new: no reward, no end, a length
            assert (reward[ended] == 0).all() and not (term | trunc)[ended].any()
            assert info["_length"][ended].all() and (envs.sim.t[ended] == 0).all()
            assert (info["length"][ended] >= 2).all()
            restarted += ended.sum()
        ended = term | trunc
    assert restarted >= 32
    single = gym.make("healthgym/Patient-v0", run=str(run), reward="-(hr_next > 100)")
    assert single.reset(seed=0)[0].shape == (3,)


@pytest.mark.parametrize(
    "action, message",
    [
        (1.7, "whole level indices"),
        (-1, r"level index 0\.\.1 \(levels \[0, 1\]\), got -1"),
        (2, r"level index 0\.\.1"),
        ([0, 1], r"level indices \(vent\), got shape"),
    ],
)
def test_actions_are_checked_in_both_envs(run, action, message):
    single = simulator.make(run)
    single.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        single.step(action)
    many = simulator.make(run, num_envs=4)
    many.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        many.step(np.asarray([action] * 4))
    assert single.step(1.0)[0].shape == (3,)  # a whole float is a level index


def test_a_restarted_row_draws_as_a_fresh_patient(run):
    """The auto-reset's state: a row restarted mid-stay draws, from the same uniforms, what
    a new drawer of that patient draws."""
    import torch

    from healthgym.models.healthgym.sampler import StepDrawer

    net, tok = hg.load(run)._fitted()
    tokens = tok.transform(hg.Cohort(treated_cohort(8, seed=5).table, tok.schema))
    static, dynamic = torch.from_numpy(tokens.static), torch.from_numpy(tokens.dynamic)
    drawer = StepDrawer(net.sequence, static, 1.0)
    for t in range(2):
        drawer.draw(torch.rand(len(net.sequence.vocab), 8).double())
        drawer.commit(dynamic[:, t])
    rows = torch.tensor([True, False] * 4)
    fresh_static = static.flip(0)[rows]
    drawer.restart(rows, fresh_static)
    fresh = StepDrawer(net.sequence, fresh_static, 1.0)
    for t in range(3):
        u = torch.rand(len(net.sequence.vocab), 8).double()
        assert torch.equal(drawer.draw(u)[rows], fresh.draw(u[:, rows]))
        drawer.commit(dynamic[:, t])
        fresh.commit(dynamic[rows, t])


def test_an_export_beside_its_run_recovers_the_simulator(run, tmp_path, monkeypatch):
    """Issue 29: the Minari dataset names the simulator (recover_environment, d3rlpy's
    get_minari), and both end stays truncated at the same longest stay."""
    minari = pytest.importorskip("minari")
    d3rlpy = pytest.importorskip("d3rlpy")
    from healthgym.rl.offline import export_minari

    cohort = treated_cohort(30, seed=7)
    with pytest.raises(ValueError, match=r"hidden \['nope'\] are not variables"):
        export_minari(cohort, tmp_path / "x", reward="-(hr_next > 100)", hidden=["nope"])
    export_minari(cohort, tmp_path / "m", reward="-(hr_next > 100)", run=run,
                  dataset_id="healthgym/vent-v0")  # fmt: skip
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "m"))
    dataset = minari.load_dataset("healthgym/vent-v0")
    env = dataset.recover_environment()
    assert env.observation_space == dataset.observation_space
    assert env.action_space == dataset.action_space
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    longest = simulator.make(run).sim.longest
    for episode in dataset.iterate_episodes():
        assert episode.truncations[-1] == (len(episode.rewards) + 1 >= longest)
    replay, recovered = d3rlpy.datasets.get_minari("healthgym/vent-v0")
    assert replay.size() == dataset.total_episodes
    assert recovered.observation_space == dataset.observation_space


def test_the_previous_treatment_is_observed_alike_in_export_and_simulator(run, tmp_path):
    """Issue 29: an option to observe the treatment of the step before, the same columns in
    the export (from the record) and the simulator (from the policy's last action)."""
    minari = pytest.importorskip("minari")
    from healthgym.rl.offline import export_minari, transitions

    cohort = treated_cohort(20, seed=8)
    data = transitions(cohort, "0", previous=True)
    assert data.observation_names[-2:] == ["vent__previous=0", "vent__previous=1"]
    for obs, acts in zip(data.observations, data.actions, strict=True):
        assert (obs[0, -2:] == 0).all()  # nothing before the first step
        assert (obs[1:, -1] == acts).all() and (obs[1:, -2] == 1 - acts).all()
    env = simulator.make(run, previous=True)
    assert env.observation_space.shape == (5,)
    obs, _ = env.reset(seed=0)
    assert (obs[-2:] == 0).all()
    assert env.step(1)[0][-2:].tolist() == [0.0, 1.0]
    assert env.step(0)[0][-2:].tolist() == [1.0, 0.0]
    export_minari(cohort, tmp_path / "m", reward="0", run=run, previous=True,
                  dataset_id="healthgym/prev-v0")  # fmt: skip
    import os

    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "m")
    try:
        dataset = minari.load_dataset("healthgym/prev-v0")
        assert dataset.recover_environment().observation_space == dataset.observation_space
    finally:
        del os.environ["MINARI_DATASETS_PATH"]


def test_training_keeps_the_observation_statistics_with_the_run(run, tmp_path):
    """Issue 29: training writes each observation column's mean and scale with the run
    (observations.json, from patients drawn from it); the simulator reads them, and they
    equal a fresh draw's; a damaged file is named when the run loads."""
    import json
    import shutil

    from healthgym.rl.transitions import scaling_of_run

    stats = json.loads((run / "observations.json").read_text())
    sim = simulator.make(run, normalize=True, previous=True).sim
    names = sim.layout.names
    assert any(n.startswith("vent__previous") for n in names)
    np.testing.assert_array_equal(sim.scaling[0], [stats[n][0] for n in names])
    np.testing.assert_array_equal(sim.scaling[1], [stats[n][1] for n in names])
    model = hg.load(run)
    model.observation_stats = None  # as a run folder written before it
    mean, scale = scaling_of_run(model, sim.actions, [], True)
    np.testing.assert_allclose(mean, sim.scaling[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scale, sim.scaling[1], rtol=1e-5, atol=1e-6)
    copy = shutil.copytree(run, tmp_path / "copy")
    (copy / "observations.json").write_text('{"hr": [90.0, 0.0]}')
    with pytest.raises(ValueError, match=r"observations.json: expected \{column: \[mean, scale"):
        hg.load(copy)


def test_normalised_observations_are_scaled_alike_in_export_and_simulator(
    run, tmp_path, monkeypatch
):
    """Issue 29: observation scaling (mean, scale per column) from patients drawn from the
    run: recorded in the export and used by the simulator the export names."""
    import json

    minari = pytest.importorskip("minari")
    from healthgym.rl.offline import export_minari

    raw, scaled = simulator.make(run), simulator.make(run, normalize=True)
    mean, scale = scaled.sim.scaling
    a, b = raw.reset(seed=3)[0], scaled.reset(seed=3)[0]
    np.testing.assert_allclose(b, (a - mean) / scale, rtol=1e-5, atol=1e-5)
    assert abs(mean[2] - 90) < 25 and scale[2] > 5  # hr: the cohort's, not 0 and 1
    export_minari(treated_cohort(40, seed=9), tmp_path / "m", reward="0", run=run,
                  normalize=True, dataset_id="healthgym/norm-v0")  # fmt: skip
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "m"))
    dataset = minari.load_dataset("healthgym/norm-v0")
    layout = json.loads(dataset.storage.metadata["description"].split("Layout (JSON): ")[1])
    np.testing.assert_allclose(layout["mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(layout["scale"], scale, rtol=1e-6)
    observed = np.concatenate([e.observations for e in dataset.iterate_episodes()])
    assert np.abs(observed.mean(0)).max() < 1  # the real cohort, scaled like the simulator's
    env = dataset.recover_environment()
    np.testing.assert_allclose(env.unwrapped.sim.scaling[0], mean)
