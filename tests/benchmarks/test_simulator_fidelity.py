"""The RL quick start end to end (slow: it trains the default model on the demo cohort)."""

import pytest

pytest.importorskip("d3rlpy")


@pytest.mark.slow
def test_quick_rl_flow_trains_exports_rolls_out_and_scores():
    from benchmarks import simulator_fidelity

    text = simulator_fidelity.main(["--quick", "--no-record"])
    assert "behaviour cloning (d3rlpy, offline)" in text
    assert "simulator: one-step KS distance" in text
