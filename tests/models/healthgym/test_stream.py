"""The default model on a Parquet file read chunk by chunk (`--stream`, issue 19): the same
tokenizer, tokens and training as in memory where the cohort fits the tokenizer's sample, and
each of 2 processes holding only its own patients' steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

import healthgym as hg
from healthgym.cli import main
from healthgym.data.parquet_shards import ParquetShards
from healthgym.models.healthgym import stream
from healthgym.models.healthgym.tokenizer import GRID, Tokenizer
from healthgym.training import distributed
from helpers import make_table

# dropout 0: per-process dropout masks would part 2 processes from 1 by design
# levels on (a cohort this small has them off by default): streamed fits must equal in-memory ones
SETTINGS = dict(width=8, dropout=0.0, epochs=6, lr=0.03, patience=2, device="cpu", levels=True)
#: the two-process comparison, to 1e-5: without levels, whose many near-zero gradients Adam
#: turns into lr-sized steps from float rounding, moving the validation loss by about 2% at
#: this lr (measured); test_healthgym_distributed.py compares processes with levels on
STRICT = {**SETTINGS, "levels": False}


@pytest.fixture
def cohort_file(tmp_path: Path) -> tuple[hg.Cohort, Path]:
    """60 patients of 2-5 steps in row groups of 7 rows (patients straddle row groups); one
    patient has no lactate."""
    table = make_table(60, seed=4)
    table.loc[table["pid"] == 130, "lactate"] = np.nan
    cohort = hg.Cohort(table, id="pid", time="hour")
    path = tmp_path / "cohort.parquet"
    pq.write_table(pq.read_table(cohort.to_parquet(tmp_path / "whole.parquet")), path, 7)
    return cohort, path


def test_tokenizer_and_tokens_equal_the_in_memory_ones(cohort_file) -> None:
    cohort, path = cohort_file
    # chunks of one patient: patient 130's holds no lactate (a chunk may lack a variable)
    shards = ParquetShards(path, cohort.schema, chunk_patients=1)
    memory = Tokenizer(cohort.schema).fit(cohort)
    expected = memory.transform(cohort, seed=3)
    for world in (1, 3):
        starts = [distributed.shard_range(60, r, world)[0] for r in range(world)]
        tok, draws = stream.fit_tokenizer(shards, 32, 32, 20_000, 0, starts)
        assert json.dumps(tok.to_dict()) == json.dumps(memory.to_dict())
        parts = [
            stream.tokens(shards, tok, draws[r], 3, *distributed.shard_range(60, r, world))
            for r in range(world)
        ]
        static, dynamic = (np.concatenate(p) for p in zip(*parts, strict=True))
        assert static.dtype == dynamic.dtype == np.uint8
        assert np.array_equal(static, expected.static)
        assert np.array_equal(dynamic, expected.dynamic)  # ties drawn as in memory


def test_a_larger_cohort_fits_its_quantiles_on_a_sample(cohort_file) -> None:
    cohort, path = cohort_file
    shards = ParquetShards(path, cohort.schema, chunk_patients=8)
    tok, _ = stream.fit_tokenizer(shards, 32, 32, 25, 0, [0])
    memory = Tokenizer(cohort.schema).fit(cohort)
    chosen = stream.sample_patients(60, 25, 0)
    assert chosen.sum() == 25
    sampled = cohort.subset(cohort.ids[chosen])
    for ours, whole in zip(tok.dynamic_columns, memory.dynamic_columns, strict=True):
        if ours.kind != "bins":  # levels, few values: exact
            assert ours == whole
            continue
        grid = np.quantile(sampled.table[ours.name].dropna(), np.linspace(0, 1, GRID))
        assert ours.grid[1:-1] == grid[1:-1].tolist()  # the sample's quantiles ...
        assert (ours.grid[0], ours.grid[-1]) == (whole.grid[0], whole.grid[-1])  # ... every
        assert ours.decimals == whole.decimals  # patient's range and decimals
    assert (tok.max_length, tok.time_origin) == (memory.max_length, memory.time_origin)


def test_fit_on_the_file_equals_fit_in_memory(cohort_file, tmp_path: Path) -> None:
    cohort, path = cohort_file
    a = hg.HealthGym(**SETTINGS).fit(cohort, tmp_path / "a", progress=False)
    shards = ParquetShards(path, cohort.schema, chunk_patients=7)
    b = hg.HealthGym(**SETTINGS).fit(shards, tmp_path / "b", progress=False)
    assert a.result.steps == b.result.steps > 0 and a.best_val_nll == b.best_val_nll
    for k, v in a.network.state_dict().items():
        assert torch.equal(v, b.network.state_dict()[k]), k
    val = [r["val_nll"] for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").open())
           if "val_nll" in r]  # fmt: skip
    assert min(val) < val[0]  # it learned
    assert len(hg.load(tmp_path / "b").sample(5, seed=0)) == 5


def test_static_validation_in_pieces_reads_alike(cohort_file, tmp_path, monkeypatch) -> None:
    """A large cohort's static validation passes go in pieces (bounded memory)."""
    from healthgym.models.healthgym import trainer

    cohort, _ = cohort_file
    fits = {}
    for piece in (trainer.STATIC_PIECE, 2):  # one piece; 3 pieces of the 6 validation patients
        monkeypatch.setattr(trainer, "STATIC_PIECE", piece)
        hg.HealthGym(**{**SETTINGS, "epochs": 1}).fit(cohort, tmp_path / str(piece), progress=False)
        rows = map(json.loads, (tmp_path / str(piece) / "metrics.jsonl").open())
        fits[piece] = next(r["static_val_nll"] for r in rows if "static_val_nll" in r)
    assert fits[2] == pytest.approx(fits[trainer.STATIC_PIECE], rel=0.05)


def test_static_steps_on_drawn_batches_fit_as_well(cohort_file, tmp_path, monkeypatch) -> None:
    """Above STATIC_BATCH patients each static step takes a seeded draw (bounded set-up time
    at scale) and fits about as well as full batches; the draws repeat with the seed."""
    from healthgym.models.healthgym import trainer

    cohort, _ = cohort_file
    fits = {}
    for name, batch in (("full", trainer.STATIC_BATCH), ("drawn", 24), ("again", 24)):
        monkeypatch.setattr(trainer, "STATIC_BATCH", batch)  # 24 of the 54 training patients
        hg.HealthGym(**{**SETTINGS, "epochs": 1}).fit(cohort, tmp_path / name, progress=False)
        rows = map(json.loads, (tmp_path / name / "metrics.jsonl").open())
        fits[name] = next(r["static_val_nll"] for r in rows if "static_val_nll" in r)
    assert fits["drawn"] != fits["full"] and fits["drawn"] == fits["again"]
    assert fits["drawn"] == pytest.approx(fits["full"], rel=0.1)


def _worker(path: str, schema: dict[str, Any], out: str) -> float:
    """One of 2 processes: train on the file, holding only its own patients' steps."""
    torch.set_num_threads(1)
    shards = ParquetShards(path, hg.Schema.from_dict(schema), chunk_patients=7)
    return hg.HealthGym(**STRICT).fit(shards, out, progress=False).best_val_nll


@pytest.mark.slow  # a launch of 2 processes: 12 s on a shared 2-core machine
def test_two_processes_each_holding_its_patients_match_one(cohort_file, tmp_path) -> None:
    """Equal up to float rounding, which Adam turns into an lr step where a gradient is near
    zero (tests/models/healthgym/test_healthgym_distributed.py)."""
    cohort, path = cohort_file
    args = (str(path), cohort.schema.to_dict(), str(tmp_path / "two"))
    results = distributed.launch(_worker, args, 2)
    one = hg.HealthGym(**STRICT).fit(cohort, tmp_path / "one", progress=False)
    assert results[0] == results[1] == pytest.approx(one.best_val_nll, rel=1e-5)
    ours, theirs = one.network.state_dict(), hg.load(tmp_path / "two").network.state_dict()
    d = torch.cat([(ours[k] - theirs[k]).abs().flatten() for k in ours])
    assert (d > 1e-5).float().mean() < 0.01 and d.max() < 3 * STRICT["lr"], d.max()
    val = {
        run: [r["val_nll"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").open())
              if "val_nll" in r]
        for run in ("one", "two")
    }  # fmt: skip
    assert val["two"] == pytest.approx(val["one"], rel=1e-5)


def run(*args: Any) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_streams_the_default_model(cohort_file, tmp_path: Path) -> None:
    cohort, path = cohort_file
    cohort.schema.to_yaml(tmp_path / "s.yaml")
    common = ("--schema", tmp_path / "s.yaml", "--stream", "--epochs", "1", "--quiet")
    r = run("train", path, *common, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "run" / "model.json").read_text())["model"] == "healthgym"
    parts = tmp_path / "parts"  # what `healthgym sample -o OUT/` writes: a folder of parts
    r = run("sample", tmp_path / "run", "-n", 30, "-o", f"{parts}/")
    assert r.exit_code == 0, r.output
    r = run("train", parts, *common, "--out", tmp_path / "run2")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run2" / "weights.pt").is_file()
    csv = tmp_path / "data.csv"
    cohort.to_csv(csv)
    for args, message in [
        ((csv, *common), "cannot read as Parquet"),
        ((path, "--stream", "--id", "pid", "--time", "hour"), "--stream reads DATA with --schema"),
        ((path, *common, "--model", "gan"), "--stream trains healthgym or v1"),
        ((path, *common, "--dp-epsilon", "1"), "drop --stream"),
    ]:
        r = run("train", *args, "--out", tmp_path / "bad")
        assert r.exit_code == 2 and message in r.output and len(r.output.splitlines()) == 1
