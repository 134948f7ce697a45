"""The benchmark commands keep working: each core function at a tiny size (no timing asserts)."""

import math

import torch
from benchmarks.cohorts import art_design
from benchmarks.common import SECTION, record, table
from benchmarks.reference_v1 import LoopBiLSTM
from torch import nn

import healthgym as hg
from benchmarks import sample_speed, time_to_quality, train_speed
from healthgym.models.v1.config import V1Config

TINY = {"hidden": 8, "noise_dim": 8, "batch_size": 8}


def test_train_speed_runs_ours_and_the_reference() -> None:
    cfg = V1Config(**TINY, curriculum=(2, 4), device="cpu")
    summary, detail, peak = train_speed.run(
        ["art"], cfg=cfg, data={"art": art_design(n=12, length=4)}, peak_size=64
    )
    assert [r["impl"] for r in summary] == ["ours", "reference"]
    assert all(r["s/epoch"] > 0 and r["gen steps/epoch"] == 4 for r in summary)
    assert len(detail) == 2 * 4 and peak > 0
    assert "| art" in table(summary)


def test_ablation_switches_back() -> None:
    final = train_speed.v1.bilstm_final
    with train_speed._speedups(fused_penalty=False, keep_memory=False):
        assert train_speed.v1.bilstm_final is not final
    assert train_speed.v1.bilstm_final is final


def test_lstm_ceiling_and_busy_process() -> None:
    row = train_speed.lstm_ceiling(V1Config(**TINY), threads=1, length=3, repeats=1)
    assert row["shape"] == "16 x 3 x 8" and row["s"] > 0 and row["GFLOP/s"] > 0
    with train_speed.busy_process():
        pass  # started and killed: the block returns
    with train_speed.busy_process(on=False):
        pass


def test_epoch_plan_and_flop_count() -> None:
    plan = train_speed.epoch_plan(torch.tensor([4] * 12 + [2] * 3), (2, 4), 8)
    assert plan == {(2, 8): 1, (2, 7): 1, (4, 8): 1, (4, 4): 1}
    layout = art_design(n=2, length=2)[2]
    one = train_speed.flops_per_sequence_step(layout, V1Config(critic_iters=1))
    five = train_speed.flops_per_sequence_step(layout, V1Config())
    assert 0 < one < five < 5 * one


def test_reference_lstm_is_nn_lstm() -> None:
    torch.manual_seed(0)
    ref, lstm = LoopBiLSTM(3, 5).double(), nn.LSTM(3, 5, batch_first=True, bidirectional=True)
    lstm = lstm.double()
    for cell, sfx in ((ref.fwd, ""), (ref.bwd, "_reverse")):
        cell.x2h.weight.data = getattr(lstm, f"weight_ih_l0{sfx}").data
        cell.x2h.bias.data = getattr(lstm, f"bias_ih_l0{sfx}").data
        cell.h2h.weight.data = getattr(lstm, f"weight_hh_l0{sfx}").data
        cell.h2h.bias.data = getattr(lstm, f"bias_hh_l0{sfx}").data
    x = torch.rand(2, 4, 3, dtype=torch.float64)
    (out, final), (expected, (h_n, _)) = ref(x), lstm(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(final, torch.cat([h_n[0], h_n[1]], -1))


def test_sample_speed_reports_rss_and_throughput() -> None:
    (row,) = sample_speed.run([5], length=3, **TINY)
    assert row["rows"] == 15 and row["peak RSS MiB"] > 0 and row["patient-steps/s"] > 0


def test_time_to_quality_scores_each_variant() -> None:
    cohort = hg.datasets.demo()
    cohort = cohort.subset(cohort.ids[:40])
    extra = {**TINY, "batch_size": 16, "epochs": 1}
    timeline, summary, ceiling = time_to_quality.run(
        ["faithful", "lean"], minutes=0.01, every=0.3, cohort=cohort, extra=extra
    )
    assert [r["variant"] for r in summary] == ["faithful", "lean"]
    assert all(0 <= r["quality"] <= 1 for r in timeline) and 0 < ceiling["quality"] <= 1
    assert not math.isnan(summary[0]["s to target"])
    # Target mode: faithful trains its epochs first and its final quality is the target.
    timeline, summary, ceiling = time_to_quality.run(
        ["lean", "faithful"], 0.01, 0.3, cohort, {**extra, "epochs": 2}, faithful_epochs=1
    )
    assert [r["variant"] for r in summary] == ["faithful", "lean"]
    faithful = [r for r in timeline if r["variant"] == "faithful"]
    assert faithful[-1]["epochs"] == 1 and ceiling["target"] == faithful[-1]["quality"]


def test_record_appends_inside_its_own_section(tmp_path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Someone else\n\ntheirs\n")
    record("### run 1", path)
    record("### run 2", path)
    text = path.read_text()
    assert text.index("theirs") < text.index(SECTION) < text.index("run 1") < text.index("run 2")
    path.write_text(text.replace(SECTION, SECTION + "\n\nintro") + "\n## Later section\n\nlater\n")
    record("### run 3", path)
    text = path.read_text()
    assert text.index("run 2") < text.index("run 3") < text.index("## Later section")


def test_default_speed_quick_records_every_figure(tmp_path, monkeypatch) -> None:
    from benchmarks import default_speed

    recorded = []
    monkeypatch.setattr(default_speed, "record", lambda text, section: recorded.append(text))
    default_speed.main(["--quick"])
    (text,) = recorded
    figures = ("training: one epoch", "to early stop", "sampling in-process", "sampling via CLI",
               "peak RSS", "healthgym --help", "% of FLOP bound")  # fmt: skip
    assert all(figure in text for figure in figures)
    assert "nan" not in text.split("sampling in-process")[1].split("\n")[0]


def test_default_speed_flop_count() -> None:
    from benchmarks.default_speed import epoch_flops, flops, sample_flops

    class Tok:
        dynamic_vocab, static_vocab = [10, 4], [3, 12]

    f = flops(Tok, 8)
    assert f["step"] == 12 * 64 + 2 * 16 * 64 + 2 * 8 * 14
    assert f["static"] == 2 * 16 * 64 + 2 * 8 * 15
    assert sample_flops(Tok, 8, 2.0) == f["static"] + 2 * f["step"]
    assert epoch_flops(Tok, 8, 10, 2) == f["step"] * 32
