"""Offline-RL export: a Minari dataset that Minari reads and d3rlpy trains on."""

import numpy as np
import pytest
from click.testing import CliRunner

import healthgym as hg
from healthgym.cli import main
from helpers import make_table

minari = pytest.importorskip("minari")
d3rlpy = pytest.importorskip("d3rlpy")
from healthgym.rl.offline import export_minari, transitions  # noqa: E402


@pytest.fixture
def cohort() -> hg.Cohort:
    table = make_table(30, seed=5)
    table.loc[table.index[::7], "vent"] = np.nan  # a missing action repeats the previous one
    return hg.Cohort(table, id="pid", time="hour")


def load(root, dataset_id, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return minari.load_dataset(dataset_id)


def test_transitions_follow_the_stays(cohort):
    data = transitions(cohort, "hr_next - hr", ["vent"])
    table = cohort.table
    first = table[table.pid == table.pid.iloc[0]]
    hr = first.hr.to_numpy()
    np.testing.assert_allclose(data.rewards[0], hr[1:] - hr[:-1])
    assert data.observations[0].shape[0] == len(first)
    assert "vent" not in " ".join(data.observation_names)  # actions are not observed
    assert {"lactate", "lactate__measured", "sex=Female"} <= set(data.observation_names)
    hidden = transitions(cohort, "hr_next - hr", ["vent"], hidden=["age"])
    assert set(data.observation_names) - set(hidden.observation_names) == {"age"}
    assert np.isfinite(np.concatenate(data.observations)).all()
    levels = cohort.schema["vent"].levels
    vent = first.vent.ffill().fillna(levels[0]).to_numpy()  # never recorded: the first level
    assert data.actions[0].tolist() == [levels.index(v) for v in vent[:-1]]


def test_minari_reads_it_and_d3rlpy_trains_on_it(cohort, tmp_path, monkeypatch):
    path = export_minari(cohort, tmp_path, actions=["vent", "gcs"], reward="-(hr_next > 100)",
                         dataset_id="healthgym/toy-v0")  # fmt: skip
    assert path.exists()
    ds = load(tmp_path, "healthgym/toy-v0", monkeypatch)
    stays = cohort.table.groupby("pid").size()
    assert ds.total_episodes == (stays >= 2).sum()
    assert ds.total_steps == (stays[stays >= 2] - 1).sum()
    assert ds.action_space.nvec.tolist() == [2, 3]  # vent: 2 levels, gcs: 3
    episodes = list(ds.iterate_episodes())
    assert all(ep.terminations[-1] != ep.truncations[-1] for ep in episodes)
    assert all(set(ep.rewards) <= {0.0, -1.0} for ep in episodes)


def test_d3rlpy_learns_the_recorded_policy_from_the_export(tmp_path, monkeypatch):
    """Ventilation given exactly when the heart rate is above 85: behaviour cloning on the
    exported dataset recovers that rule, which the untrained policy does not know."""
    table = make_table(60, seed=6)
    table["vent"] = (table["hr"] > 85).astype(int)
    export_minari(hg.Cohort(table, id="pid", time="hour"), tmp_path, actions=["vent"],
                  reward="0", dataset_id="healthgym/bc-v0")  # fmt: skip
    episodes = list(load(tmp_path, "healthgym/bc-v0", monkeypatch).iterate_episodes())
    obs = np.concatenate([ep.observations[:-1] for ep in episodes])
    acts = np.concatenate([ep.actions for ep in episodes])
    rewards = np.concatenate([ep.rewards for ep in episodes])
    ends = np.concatenate([np.arange(len(ep.rewards)) == len(ep.rewards) - 1 for ep in episodes])
    dataset = d3rlpy.dataset.MDPDataset(obs, acts, rewards, ends.astype(np.float32))
    std = np.maximum(obs.std(0), 1e-3)
    scaler = d3rlpy.preprocessing.StandardObservationScaler(mean=obs.mean(0), std=std)
    bc = d3rlpy.algos.DiscreteBCConfig(batch_size=32, observation_scaler=scaler).create("cpu:0")
    bc.build_with_dataset(dataset)
    before = (bc.predict(obs) == acts).mean()
    quiet = d3rlpy.logging.NoopAdapterFactory()  # no d3rlpy_logs/ folder
    bc.fit(dataset, n_steps=300, n_steps_per_epoch=300, show_progress=False, logger_adapter=quiet)
    after = (bc.predict(obs) == acts).mean()
    assert after > 0.85 and after > before + 0.2, (before, after)


def test_cli_export_and_refusals(cohort, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cohort.to_file("data.csv")
    cohort.schema.to_yaml("data.schema.yaml")
    args = ["export", "data.csv", "--schema", "data.schema.yaml", "--actions", "vent",
            "--reward", "-(hr_next > 100)", "-o", "rl", "--name", "healthgym/cli-v0"]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert load(tmp_path / "rl", "healthgym/cli-v0", monkeypatch).total_episodes > 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "already holds" in again.output
    bad = CliRunner().invoke(main, [*args[:5], "sex", *args[6:]])
    assert bad.exit_code == 2 and "static" in bad.output
    bad = CliRunner().invoke(main, [*args[:7], "open('x')", *args[8:]])
    assert bad.exit_code == 2 and "names" in bad.output
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="not a variable"):
        export_minari(cohort, tmp_path, actions=["nope"], reward="0")


def test_export_names_and_folders_are_checked_before_anything_is_created(
    cohort, tmp_path, monkeypatch
):
    """Issue 30, cases 4 and 11: a dataset name that leaves -o (.., an absolute path) and an
    -o inside a run folder are refused with nothing created; a failed export leaves no
    empty folders behind."""
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    cohort.to_file("data.csv")
    cohort.schema.to_yaml("data.schema.yaml")
    args = ["export", "data.csv", "--schema", "data.schema.yaml", "--actions", "vent",
            "--reward", "-(hr_next > 100)", "-o", "rl", "--name"]  # fmt: skip
    for name in ("../../../x-v0", str(tmp_path / "abs-v0"), "a/../../y-v0", ".hidden-v0"):
        r = CliRunner().invoke(main, [*args, name])
        assert r.exit_code == 2 and "must be NAMESPACE/NAME-vN" in r.output, r.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["a", "b", "c", "data.csv", "data.schema.yaml"]
    )
    (work / "run").mkdir()
    (work / "run" / "model.json").write_text("{}")
    r = CliRunner().invoke(main, [*args[:-2], "run/rl", "--name", "ok-v0"])
    assert r.exit_code == 2 and "inside the run folder" in r.output
    assert sorted(p.name for p in (work / "run").iterdir()) == ["model.json"]
    monkeypatch.setattr(
        minari, "create_dataset_from_buffers", lambda **kw: (_ for _ in ()).throw(OSError("full"))
    )
    with pytest.raises(OSError, match="full"):
        export_minari(cohort, work / "new", actions=["vent"], reward="0", dataset_id="n/d-v0")
    assert not (work / "new").exists()


def test_role_action_variables_are_the_default_actions(cohort, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="role: action"):
        transitions(cohort, "0")
    cohort.schema["vent"].role = "action"
    assert [v.name for v in cohort.schema.actions] == ["vent"]
    assert "vent" in [v.name for v in cohort.schema.dynamic]  # still generated as dynamic
    export_minari(cohort, tmp_path, reward="0", dataset_id="healthgym/roles-v0")
    assert load(tmp_path, "healthgym/roles-v0", monkeypatch).action_space.n == 2
    from healthgym.datasets.healthgym_layouts import LAYOUTS

    marked = {name: [v.name for v in lay.schema().actions] for name, lay in LAYOUTS.items()}
    assert marked["hypotension"] == ["fluid_boluses", "vasopressors"]
    assert marked["sepsis"] == ["Input4H", "MaxVaso"] and len(marked["art-for-hiv"]) == 5


@pytest.mark.parametrize("bins", [0, -3, 10**9])
def test_action_bins_are_bounded_before_any_work(bins, tmp_path):
    """Issue 29: --action-bins 1e9 grew to 23 GB; -3 and 0 blamed the data."""
    from healthgym.rl.offline import transitions

    cohort = hg.Cohort(make_table(10, seed=1), id="pid", time="hour")
    with pytest.raises(ValueError, match="action bins must be 2 to 100"):
        transitions(cohort, "0", ["hr"], action_bins=bins)


def test_a_reward_reading_an_observed_static_warns_of_a_leak():
    """Issue 29: a reward on an outcome known after the stay (a static such as death) that
    the observations also show hands the policy the answer: say so, unless it is hidden."""
    import warnings

    cohort = hg.Cohort(make_table(10, seed=1), id="pid", time="hour")
    with pytest.warns(UserWarning, match=r"the reward reads \['age'\].*hide it"):
        transitions(cohort, "where(last, -age, 0)", ["vent"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transitions(cohort, "where(last, -age, 0)", ["vent"], hidden=["age"])
        transitions(cohort, "-hr_next", ["vent"])


def test_a_static_marked_outcome_in_the_observations_warns_even_unrewarded(tmp_path):
    """Issue 29: the schema marks outcomes (`outcome: true`, the demo's in_hospital_death);
    observations that show one hand the policy the answer, whatever the reward reads."""
    import warnings

    table = make_table(10, seed=1)
    table["died"] = (table["age"] > 50).astype(int)
    cohort = hg.Cohort(table, id="pid", time="hour")
    marked = cohort.schema.with_overrides(died={"outcome": True})
    assert "outcome: true" in marked.to_yaml(tmp_path / "s.yaml")
    assert hg.Schema.from_yaml(tmp_path / "s.yaml") == marked
    cohort = hg.Cohort(table, marked)
    with pytest.warns(UserWarning, match=r"show \['died'\], which the schema marks as outcomes"):
        transitions(cohort, "-hr_next", ["vent"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        transitions(cohort, "where(last, -died, 0)", ["vent"], hidden=["died"])
    assert hg.datasets.demo().schema["in_hospital_death"].outcome
    with pytest.raises(ValueError, match="a treatment \\(role: action\\) cannot be an outcome"):
        hg.Variable("vent", "binary", "action", levels=[0, 1], outcome=True)
