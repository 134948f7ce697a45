"""benchmarks.trajectories (issue 15) keeps working: its --quick run, before and default."""

from benchmarks import trajectories


def test_quick_run_scores_before_and_default():
    text = trajectories.main(["--quick", "--no-record"])
    assert "| visits | before " in text and "| visits | default" in text
    assert "lag-1 excess (<= 0.02)" in text and "MIA AUROC (<= 0.55)" in text
    assert "the holdout's own gaps to the training patients" in text
