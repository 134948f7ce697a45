"""benchmarks.cohort_build runs and reports every column (its figures are read from
BENCHMARKS.md, never asserted here: timings and memory on a shared machine are not test
results)."""

import pytest

pytest.importorskip("duckdb")


@pytest.mark.slow  # ~20 s (three processes that import healthgym); make test-slow
def test_the_cohort_build_benchmark_reports_each_figure():
    from benchmarks.cohort_build import main

    text = main(["--stays", "4000", "--memory-limit", "500MB", "--no-record"])
    for column in ("stays/s", "streamed peak MB", "held peak MB", "imports MB", "Parquet MB"):
        assert column in text
    assert "| 4000   | 48000" in text or "| 4000 | 48000" in text
