"""benchmarks.simulator_speed runs and reports every column (its figures are read from
BENCHMARKS.md, never asserted here: timings on a shared machine are not test results)."""

import pytest

pytest.importorskip("gymnasium")


@pytest.mark.slow  # ~40 s (the demo cohort's model); make test-slow
def test_the_speed_benchmark_reports_each_figure():
    from benchmarks.simulator_speed import main

    text = main(["--patients", "1,8", "--seconds", "0.2", "--threads", "1,2", "--no-record",
                 "--workers", "2"])  # fmt: skip
    for column in ("new patient-steps/s", "0.2.0 model calls/s", "sampler patient-steps/s",
                   "network floor/s", "late / early step", "FLOP bound/s",
                   "workers patient-steps/s", "workers / one"):  # fmt: skip
        assert column in text
    # each table's header and one row per threads and patients, then per vector size
    assert text.count("\n| ") == 5 + 2
