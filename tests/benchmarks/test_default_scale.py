"""The scale benchmark runs end to end on tiny sizes (its figures: BENCHMARKS.md)."""

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_quick_scale_benchmark(stream):
    from benchmarks import default_scale

    text = default_scale.main(["--quick", "--no-record"] + ["--stream"] * stream)
    assert "patient-steps/s" in text and "patients/s" in text
    assert ("chunk by chunk" in text) == stream
