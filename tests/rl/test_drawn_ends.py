"""Stays that end where the steps draw it (`end="drawn"`, issue 28): death, discharge and the
stay's length respond to treatment in the simulator."""

import numpy as np
import pytest
import torch
from benchmarks.simulator_known_mdp import recorded, simulated_survival

import healthgym as hg
from healthgym.datasets import known_mdp as mdp
from healthgym.models.healthgym.config import HealthGymConfig
from healthgym.models.healthgym.sampler import StepDrawer, draw_stays, pick
from healthgym.models.healthgym.tokenizer import Tokenizer
from healthgym.models.healthgym.trainer import build_model
from healthgym.rl.simulator import Simulator
from helpers import treated_cohort

gym = pytest.importorskip("gymnasium")


def recorded_stays(n: int, seed: int = 0) -> hg.Cohort:
    """The known MDP's stays with the rows block the data show (outcome rows last)."""
    return recorded(n, gamma=1.0, seed=seed)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drawn")
    model = hg.HealthGym(end="drawn", width=48, bins=8, fine=4, patience=4)
    model.fit(recorded_stays(1500), folder, max_minutes=1.5, progress=False)
    return folder


def test_the_end_must_be_a_known_choice():
    with pytest.raises(ValueError, match="end must be one of length, drawn"):
        HealthGymConfig(end="sometimes")


@pytest.mark.parametrize("direct", [False, True])
@pytest.mark.parametrize("skip", [False, True])
def test_the_step_drawer_draws_the_end_the_whole_history_would(direct, skip):
    """From the same uniforms, the carried-state drawer draws the end and the columns that
    the network gives when re-run over the whole history (`logits`, `end_logits`), with the
    treatments (and, with `skip`, the previous step's tokens) read through the recurrent
    state alone or also directly."""
    cohort = treated_cohort(16, seed=4)
    tok = Tokenizer(cohort.schema, 8, 4).fit(cohort)
    cfg = HealthGymConfig(end="drawn", width=16, direct_treatments=direct, skip=skip)
    seq = build_model(tok, cfg).sequence.eval()
    assert (seq.treated is not None) == direct and (seq.skip is not None) == skip
    for p in seq.skip.parameters() if skip else []:  # it starts at 0: as if trained
        torch.nn.init.normal_(p)
    tokens = tok.transform(cohort)
    static, dynamic = torch.from_numpy(tokens.static), torch.from_numpy(tokens.dynamic)
    drawer = StepDrawer(seq, static, 1.0)
    d = len(seq.vocab)
    u = torch.rand(dynamic.shape[1], d + 1, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        c = seq.static_context(static, 16)
        for t in range(dynamic.shape[1]):
            drawn = drawer.draw(u[t].double())
            end = torch.zeros(16, t + 1, dtype=torch.long)
            _, s = seq.logits(static, dynamic[:, : t + 1], end, with_state=True)
            treated = seq.treatments(dynamic[:, : t + 1])
            now = c + (treated[:, t] if direct or skip else 0.0)
            ends = pick(seq.end_logits(s[:, t], now), u[t, -1].double()).bool()
            if t == seq.max_length - 1:
                ends[:] = True
            assert torch.equal(drawer.ended, ends), t
            prefix = dynamic[:, : t + 1].clone()
            for j, v in enumerate(seq.vocab):
                logits = seq.last_logits(static, prefix, ends.long())[:, j, :v]
                prefix[:, t, j] = pick(logits, u[t, j].double())
            assert torch.equal(drawn, prefix[:, t]), t
            drawer.commit(dynamic[:, t])


def test_asked_lengths_are_kept_and_drawn_ones_stop_at_the_longest():
    cohort = treated_cohort(16, seed=4)
    tok = Tokenizer(cohort.schema, 8, 4).fit(cohort)
    seq = build_model(tok, HealthGymConfig(end="drawn", width=16)).sequence.eval()
    static = torch.from_numpy(tok.transform(cohort).static)
    asked = torch.tensor([1, 2, 3, 6] * 4)
    steps, lengths = draw_stays(seq, static, torch.Generator().manual_seed(1), lengths=asked)
    assert torch.equal(lengths, asked)
    past = torch.arange(seq.max_length) >= lengths[:, None]
    assert (steps[past] == 0).all()
    _, drawn = draw_stays(seq, static, torch.Generator().manual_seed(1))
    assert ((drawn >= 1) & (drawn <= seq.max_length)).all()


def test_death_responds_to_treatment_in_the_simulator(run):
    """Known MDP: treating everyone keeps 0.83 alive, treating no one 0.53 (a small model
    trained briefly: ~0.15 apart). An untrained model's ends ignore the treatment (~0)."""
    sim = Simulator(hg.load(run))
    always, steps = simulated_survival(sim, mdp.stationary(np.ones(mdp.STATES)), 1500, seed=1)
    never, _ = simulated_survival(sim, mdp.stationary(np.zeros(mdp.STATES)), 1500, seed=1)
    assert always - never > 0.08, (always, never)
    assert abs(always - mdp.value(mdp.stationary(np.ones(mdp.STATES)))) < 0.1
    real = recorded_stays(1500, seed=3).table.groupby("stay").size().mean()
    assert steps == pytest.approx(real, rel=0.25)


def test_a_sampled_cohort_ends_its_stays_with_one_outcome_row(run):
    model = hg.load(run)
    table = model.sample(400, seed=0).table
    last = table.groupby("stay").tail(1)
    outcome = (table["died"] == 1) | (table["discharged"] == 1)
    assert outcome[last.index].mean() > 0.8  # the real: 0.94 (the rest run to the horizon)
    assert not outcome.drop(last.index).any()  # never before a stay's last row
    real = recorded_stays(1500, seed=3).table.groupby("stay").size().mean()
    assert table.groupby("stay").size().mean() == pytest.approx(real, rel=0.25)


def test_the_env_ends_an_episode_when_the_model_draws_it(run):
    from gymnasium.utils.env_checker import check_env

    from healthgym.rl.env import make

    env = make(run, reward="1 - died_next")
    check_env(env, skip_render_check=True)
    lengths = []
    for seed in range(30):
        _, info = env.reset(seed=seed)
        assert "length" not in info  # not known at reset: drawn step by step
        steps, done = 1, False
        while not done:
            _, reward, term, trunc, _ = env.step(0)
            steps, done = steps + 1, term or trunc
        assert steps <= env.sim.longest
        lengths.append(steps)
    assert len(set(lengths)) > 3


def test_a_reward_on_outcomes_a_length_model_fixes_at_reset_warns(run, tmp_path):
    """With the length drawn with the statics (`end="length"`), the outcome row is decided at
    reset: a reward reading it, or `last`, could never respond to the policy. Say so."""
    import warnings

    cohort = recorded_stays(400)  # enough stays for the rows block to name died=1
    assert "died=1" in cohort.schema.rows.last
    hg.HealthGym(width=8, epochs=1, end="length").fit(cohort, tmp_path / "length", progress=False)
    length_model = hg.load(tmp_path / "length")
    for reward in ("1 - died_next", "where(last, 1, 0)"):
        with pytest.warns(UserWarning, match="--preset simulator"):
            Simulator(length_model, reward=reward)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Simulator(length_model, reward="-(Lactate_next > 2)")
        Simulator(hg.load(run), reward="1 - died_next")


def test_resume_goes_on_from_real_histories_as_treated(run):
    """`Simulator.resume`: recorded patients at their step 3 as recorded; the next state
    follows the treatment the caller chooses (treated: severity falls more often)."""
    sim = Simulator(hg.load(run))
    real = recorded_stays(600, seed=4)
    lengths = real.table.groupby("stay").size()
    long = real.table[real.table["stay"].isin(lengths.index[lengths > 4])]
    stays = hg.Cohort(long, real.schema)
    with pytest.raises(ValueError, match="steps or fewer: none to resume at"):
        sim.resume(real, 3, np.random.default_rng(0))
    at3 = long[long["step"] == 3]["Severity"].to_numpy()
    change = {}
    for action in (0, 1):
        sim.resume(stays, 3, np.random.default_rng(0))
        assert (sim.t == 3).all()
        np.testing.assert_array_equal(sim.raw["Severity"].astype(float), at3)
        rng = torch.Generator().manual_seed(action)
        sim.advance(np.full((len(at3), 1), action), rng, np.random.default_rng(1))
        after = np.array([np.nan if x is None else float(x) for x in sim.raw["Severity"]])
        change[action] = np.nanmean(after - at3)
    assert change[0] - change[1] > 0.1, change  # the truth: 0.27 apart at these severities
