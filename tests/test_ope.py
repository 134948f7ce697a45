"""The known MDP's exact policy values, and off-policy evaluation against them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import healthgym as hg
from healthgym.datasets import known_mdp as mdp
from healthgym.rl import ope


@pytest.mark.parametrize("name", ["never", "lactate > 2.5", "optimal"])
def test_exact_values_match_simulated_stays(name: str) -> None:
    policy = mdp.policies()[name]
    stays = mdp.known_mdp_cohort(6000, policy=policy, seed=11)
    simulated = mdp.survival(stays).mean()
    se = np.sqrt(simulated * (1 - simulated) / 6000)
    assert abs(simulated - mdp.value(policy)) < 3.5 * se


def test_the_optimal_policy_is_best_and_the_policies_differ() -> None:
    values = {k: mdp.value(p) for k, p in mdp.policies().items()}
    assert values["optimal"] == max(values.values())
    assert values["optimal"] - values["never"] > 0.2  # treatment matters
    assert len({round(v, 3) for v in values.values()}) == len(values)


def test_the_cohort_ends_stays_with_one_outcome_row() -> None:
    table = mdp.known_mdp_cohort(300, seed=1).table
    ended = table[(table["died"] == 1) | (table["discharged"] == 1)]
    last = table.groupby("stay").tail(1)
    assert set(ended.index) <= set(last.index)  # an outcome row is always a stay's last
    assert ended[["Severity", "Lactate", "MAP", "Treat"]].isna().all().all()


@pytest.fixture(scope="module")
def recorded() -> tuple:
    cohort = mdp.known_mdp_cohort(800, gamma=1.0, seed=0)
    return ope.decisions(cohort, "Treat", terminal=mdp.survival(cohort)), cohort


def test_on_policy_importance_sampling_is_the_mean_return(recorded) -> None:
    d, cohort = recorded
    observed = mdp.survival(cohort).mean()
    fitted = ope.behaviour_model(d)  # P(recorded level): the fitted behaviour policy itself
    as_target = np.zeros((len(fitted), 2))
    as_target[np.arange(len(fitted)), d.actions] = fitted
    found = ope.importance(d, ope.weights(d, as_target))
    assert found["wis"] == pytest.approx(observed) and found["wpdis"] == pytest.approx(observed)


def test_fitted_q_evaluation_finds_the_truth_of_a_policy_never_recorded_whole(recorded) -> None:
    d, _ = recorded
    policy = mdp.policies()["always"]  # few recorded stays were treated at every step
    found = ope.evaluate_policy(d, mdp.severity_policy(policy), estimators=("fqe", "wis"),
                                bootstrap=4)  # fmt: skip
    truth = mdp.value(policy)
    assert abs(found["fqe"]["value"] - truth) < 0.06
    for e in found.values():
        assert e["low"] <= e["high"] and np.isfinite(e["value"])


def test_bad_input_is_named(recorded) -> None:
    d, cohort = recorded
    with pytest.raises(ValueError, match="treatment"):
        ope.decisions(cohort, "Lactate")
    with pytest.raises(ValueError, match="2 probabilities"):
        ope.estimate(d, lambda rows: np.ones((len(rows), 3)))
    with pytest.raises(ValueError, match="unknown estimators"):
        ope.evaluate_policy(d, mdp.severity_policy(mdp.policies()["never"]), estimators=("x",))
    with pytest.raises(ValueError, match="NaN"):
        ope.decisions(cohort, "Treat", terminal=pd.Series(dtype=float))


def test_the_command_estimates_policies_from_a_file(tmp_path) -> None:
    from helpers import one_line_error, run

    mdp.known_mdp_cohort(400, seed=3).to_csv(tmp_path / "stays.csv")
    mdp.SCHEMA.to_yaml(tmp_path / "stays.schema.yaml")
    args = ["ope", tmp_path / "stays.csv", "--schema", tmp_path / "stays.schema.yaml",
            "--action", "Treat", "--reward", "last * (1 - died_next)"]  # fmt: skip
    r = run(*args, "--policy", "1", "--policy", "Lactate > 2.5", "--estimators", "fqe,wis",
            "--bootstrap", 2, "-o", tmp_path / "ope.json")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "400 stays" in r.output and "Lactate > 2.5: fqe" in r.output
    found = json.loads((tmp_path / "ope.json").read_text())
    assert abs(found["policies"]["1"]["fqe"]["value"] - mdp.value(mdp.policies()["always"])) < 0.08
    observed = mdp.survival(hg.Cohort(pd.read_csv(tmp_path / "stays.csv"), mdp.SCHEMA)).mean()
    assert found["recorded_return"] == pytest.approx(observed)
    one_line_error(run(*args, "--policy", "Lactate_next > 2"), "decision row only")
    one_line_error(run(*args, "--policy", "1", "--estimators", "ips"), "unknown estimators")
    bad = ["--action", "Lactate", "--reward", "0", "--policy", "1"]
    one_line_error(run(*args[:4], *bad), "binary or categorical treatment")
