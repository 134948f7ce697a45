"""ParquetShards: a Parquet cohort encoded shard by shard equals the in-memory one (issue 8)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import healthgym as hg
from healthgym.data.parquet_shards import ParquetShards
from healthgym.models.v1.model import design_matrix
from helpers import make_table


@pytest.fixture
def cohort_file(tmp_path: Path) -> tuple[hg.Cohort, Path]:
    """40 patients of 2-5 steps; row groups of 7 rows, so patients straddle row groups."""
    cohort = hg.Cohort(make_table(40, seed=3), id="pid", time="hour")
    whole = cohort.to_parquet(tmp_path / "whole.parquet")
    path = tmp_path / "cohort.parquet"
    pq.write_table(pq.read_table(whole), path, row_group_size=7)
    assert pq.ParquetFile(path).metadata.num_row_groups > 10
    return cohort, path


def test_encoder_and_design_equal_the_in_memory_ones(cohort_file: tuple[hg.Cohort, Path]) -> None:
    cohort, path = cohort_file
    shards = ParquetShards(path, cohort.schema, chunk_patients=6)
    assert len(shards) == 40
    assert shards.lengths.tolist() == cohort.lengths.tolist()
    encoder = hg.Encoder(cohort.schema).fit(cohort)
    fitted = shards.fit_encoder()
    assert fitted.to_dict() == encoder.to_dict()
    expected = torch.from_numpy(design_matrix(encoder.transform(cohort))).float()
    for world in (1, 3):
        parts = [shards.design(fitted, rank, world) for rank in range(world)]
        x = torch.cat([p[0] for p in parts])
        assert torch.equal(x, expected)
        assert torch.cat([p[1] for p in parts]).tolist() == cohort.lengths.tolist()
    assert [len(shards.design(fitted, r, 3)[0]) for r in range(3)] == [13, 13, 14]


def test_a_folder_of_part_files_reads_as_the_one_file(
    cohort_file: tuple[hg.Cohort, Path], tmp_path: Path
) -> None:
    """`healthgym sample -o OUT/` writes part files; --stream reads the folder as one table
    (split mid-way through the row groups, a part without any lab value)."""
    cohort, path = cohort_file
    table = pq.read_table(path).to_pandas()
    cut = int(np.searchsorted(table["pid"].to_numpy(), 120))  # patients 100-119, 120-139
    folder = tmp_path / "parts"
    folder.mkdir()
    first, second = table.iloc[:cut], table.iloc[cut:].copy()
    second["lactate"] = None  # an all-missing column: a null-typed Parquet column in this part
    for name, part in (("part-000000.parquet", first), ("part-000001.parquet", second)):
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), folder / name, 7)
    joined = tmp_path / "joined.parquet"
    pq.write_table(pa.Table.from_pandas(pd.concat([first, second]), preserve_index=False), joined)
    a, b = (
        ParquetShards(folder, cohort.schema, chunk_patients=6),
        ParquetShards(joined, cohort.schema),
    )
    assert len(a) == 40 and a.ids.tolist() == b.ids.tolist()
    assert a.lengths.tolist() == b.lengths.tolist()
    pd.testing.assert_frame_equal(a.read(15, 25), b.read(15, 25), check_dtype=False)
    assert a.fit_encoder().to_dict() == b.fit_encoder().to_dict()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without .parquet files"):
        ParquetShards(tmp_path / "empty", cohort.schema)


def test_bad_files_are_named(cohort_file: tuple[hg.Cohort, Path], tmp_path: Path) -> None:
    cohort, path = cohort_file
    table = pq.read_table(path).to_pandas()
    moved = table.iloc[np.r_[1 : len(table), 0]]  # patient 100: first row moved to the end
    pq.write_table(pa.Table.from_pandas(moved, preserve_index=False), tmp_path / "split.parquet")
    with pytest.raises(ValueError, match="not together"):
        ParquetShards(tmp_path / "split.parquet", cohort.schema)
    table["extra"] = 1
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp_path / "extra.parquet")
    with pytest.raises(ValueError, match="extra"):
        ParquetShards(tmp_path / "extra.parquet", cohort.schema)
    with pytest.raises(ValueError, match="not found"):
        ParquetShards(tmp_path / "nope.parquet", cohort.schema)


def test_v1_fit_on_shards_equals_fit_on_the_cohort(
    cohort_file: tuple[hg.Cohort, Path], tmp_path: Path
) -> None:
    cohort, path = cohort_file
    settings = dict(noise_dim=8, hidden=8, batch_size=16, epochs=1, device="cpu")
    a = hg.HealthGymV1(**settings).fit(cohort, tmp_path / "a", progress=False)
    b = hg.HealthGymV1(**settings).fit(ParquetShards(path, cohort.schema), tmp_path / "b")
    assert a.result.steps == b.result.steps > 0
    for k, v in a.network.state_dict().items():
        assert torch.equal(v, b.network.state_dict()[k]), k
    assert hg.load(tmp_path / "b").sample(3, seed=0).table.shape[0] > 0


def test_data_scale_benchmark_runs_small(tmp_path: Path) -> None:
    from benchmarks import data_scale

    path = tmp_path / "art.parquet"
    assert data_scale.write_cohort(path, 30, 6) > 0
    shards = ParquetShards(path, data_scale.LAYOUTS["art-for-hiv"].schema())
    assert len(shards) == 30 and set(shards.lengths) == {6}
    row = data_scale.measure("shards 0/2", path, tmp_path)
    assert row["float32 tensor MiB"] == "0" and float(row["peak RSS MiB"]) > 0
    md = tmp_path / "B.md"
    md.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    data_scale.record("### first", md, section=data_scale.SECTION)
    data_scale.record("### second", md, section=data_scale.SECTION)
    text = md.read_text()
    assert text.index("kept") < text.index(data_scale.SECTION) < text.index("### first")
    assert text.index("### first") < text.index("### second")
