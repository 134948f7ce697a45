"""benchmarks.row_kinds, benchmarks.ope_known_mdp and benchmarks.simulator_known_mdp run and
report every column (their figures are read from BENCHMARKS.md, never asserted here)."""

import pytest


@pytest.mark.slow  # ~1 min; make test-slow
def test_the_row_kinds_benchmark_reports_each_figure():
    from benchmarks.row_kinds import main

    text = main(["--minutes", "0.1", "--cohorts", "pk,outcome", "--no-record"])
    for column in ("unseen patterns", "exclusive together", "terminal misplaced", "died real",
                   "per-kind gap excess", "epochs", "end"):  # fmt: skip
        assert column in text
    assert text.count("\n| ") == 3  # the header and one row per cohort


@pytest.mark.slow  # ~2 min; make test-slow
def test_the_ope_benchmark_reports_each_policy():
    from benchmarks.ope_known_mdp import main

    text = main(["--stays", "200", "--bootstrap", "2", "--no-record"])
    for name in ("never", "always", "lactate > 2.5", "random", "behaviour", "optimal"):
        assert f"| {name}" in text
    assert "coverage" in text and "Spearman" in text


@pytest.mark.slow  # ~1 min; make test-slow
def test_the_simulator_benchmark_reports_each_policy_beside_the_truth():
    from benchmarks.simulator_known_mdp import main

    text = main(["--stays", "300", "--minutes", "0.2", "--simulated", "200", "--no-record"])
    for name in ("never", "always", "lactate > 4", "random", "behaviour", "optimal"):
        assert f"| {name}" in text
    for column in ("simulator", "treatment-blind", "fqe", "dr", "Spearman", "best val NLL"):
        assert column in text
