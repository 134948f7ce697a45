"""The scale benchmark runs end to end on tiny sizes (its figures: BENCHMARKS.md)."""

import pytest


@pytest.mark.slow
def test_quick_scale_benchmark():
    from benchmarks import default_scale

    text = default_scale.main(["--quick", "--no-record"])
    assert "patient-steps/s" in text and "patients/s" in text
