"""HealthGym (autoregressive default): learning, lengths, missingness, conditions, runs, resume."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import healthgym as hg
from healthgym.models.healthgym.sampler import draw_steps
from healthgym.models.healthgym.tokenizer import Tokenizer
from healthgym.models.healthgym.trainer import build_model

TINY = {"width": 16, "batch_size": 16, "epochs": 2, "bins": 8, "fine": 4}


def toy_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Skewed statics, length set by sex, an AR(1) heart rate whose level is set by the unit,
    and a lab whose missing rate depends on the step."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        sex = "Female" if rng.random() < 0.8 else "Male"
        unit = rng.choice(["MICU", "SICU", "CCU"], p=[0.6, 0.3, 0.1])
        length = int(rng.integers(2, 4)) if sex == "Female" else int(rng.integers(6, 9))
        level = 100.0 if unit == "MICU" else 70.0
        hr = level + rng.normal(0, 10)
        for t in range(length):
            hr = level + 0.9 * (hr - level) + rng.normal(0, 4)
            lactate = (
                float(rng.gamma(2.0, 1.0)) if rng.random() < (0.1 if t == 0 else 0.8) else None
            )
            rows.append(
                {"pid": p, "hour": t, "sex": sex, "unit": unit, "hr": hr, "lactate": lactate}
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def toy():
    return hg.Cohort(toy_table(), id="pid", time="hour")


@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    settings = {"width": 32, "batch_size": 32, "epochs": 25, "bins": 16, "fine": 8}
    return hg.HealthGym(**settings).fit(toy, run, progress=False), run


def untrained(cohort: hg.Cohort, **settings) -> hg.HealthGym:
    model = hg.HealthGym(**{**TINY, **settings})
    model.tokenizer = Tokenizer(cohort.schema, model.config.bins, model.config.fine)
    model.tokenizer.fit(cohort)
    model.network = build_model(model.tokenizer, model.config).eval()
    return model


def distances(real: hg.Cohort, synth: hg.Cohort) -> dict[str, float]:
    """How far a synthetic cohort is from the toy's structure (0 = the same)."""
    rs, ss = real.static_table().set_index("pid"), synth.static_table().set_index("pid")
    real_len = real.lengths.groupby(rs.sex).mean()
    synth_len = synth.lengths.groupby(ss.sex).mean()
    by_unit = lambda c: c.table.groupby("unit").hr.mean()  # noqa: E731
    miss = lambda c: c.table.lactate.isna().groupby(c.table.hour.clip(upper=1)).mean()  # noqa: E731

    def lag1(c):  # deviations from the unit's level, so stay lengths do not enter
        x = c.table.assign(dev=c.table.hr - c.table.groupby("unit").hr.transform("mean"))
        nxt = x.groupby("pid").dev.shift(-1)
        return float(np.corrcoef(x.dev[nxt.notna()], nxt[nxt.notna()])[0, 1])

    return {
        "sex_share": abs((ss.sex == "Male").mean() - (rs.sex == "Male").mean()),
        "length_gap": float((synth_len - real_len).abs().mean()),
        "unit_hr_gap": float((by_unit(synth) - by_unit(real)).abs().mean()),
        "missing_gap": float((miss(synth) - miss(real)).abs().mean()),
        "lag1_gap": abs(lag1(synth) - lag1(real)),
    }


def test_learns_statics_lengths_levels_dynamics_and_missingness(toy, trained):
    """Untrained vs at most 25 epochs (~10 s). Every structure of the toy is learned.
    Measured (seed 0): Male share gap 0.75 -> 0.03, length gap by sex 1.3 -> 0.03 steps,
    unit heart-rate gap 21 -> 1.4, missing-rate gap 0.38 -> 0.04, lag-1 gap 0.96 -> 0.18."""
    before = distances(toy, untrained(toy, width=32, bins=16, fine=8).sample(600, seed=0))
    after = distances(toy, trained[0].sample(600, seed=0))
    assert after["sex_share"] < 0.05, after
    assert after["length_gap"] < 0.3 < 1 < before["length_gap"], (before, after)
    assert after["unit_hr_gap"] < 5 < before["unit_hr_gap"], (before, after)
    assert after["missing_gap"] < 0.06 < before["missing_gap"], (before, after)
    assert after["lag1_gap"] < 0.35 < before["lag1_gap"], (before, after)


def test_training_stops_on_the_validation_loss(toy, tmp_path):
    model = hg.HealthGym(
        **{**TINY, "epochs": 200, "patience": 2, "lr_patience": 1, "lr": 0.05}
    ).fit(toy, tmp_path / "run", progress=False)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [r for r in map(json.loads, lines) if "val_nll" in r]  # one per epoch
    assert model.result.stopped_early == "early_stopping" and len(rows) < 200
    assert model.result.epochs == len(rows)
    assert model.best_val_nll == pytest.approx(min(r["val_nll"] for r in rows))
    assert rows[-1]["lr"] < 0.05  # halved after lr_patience epochs without progress


def test_fixed_length_and_statics_constant(trained):
    synth = trained[0].sample(50, seed=1, length=4)
    assert (synth.lengths == 4).all()
    assert synth.table.groupby("pid")[["sex", "unit"]].nunique().max().max() == 1
    # Men stay 6-8 steps in the toy: asked for 2-step stays, the statics follow the length.
    short = trained[0].sample(200, seed=1, length=2).static_table()
    assert (short.sex == "Female").mean() > 0.95
    net = trained[0].network
    static = torch.zeros(3, 3, dtype=torch.long)
    steps = draw_steps(net.sequence, static, torch.tensor([1, 3, 8]), torch.Generator())
    assert steps.shape == (3, 8, len(net.sequence.vocab))


def test_conditions(trained, toy):
    model = trained[0]
    synth = model.sample(300, seed=0, conditions={"unit": "CCU"})
    assert set(synth.table.unit) == {"CCU"}
    assert abs(synth.table.hr.mean() - 70) < 8  # CCU patients' heart rate level
    assert synth.static_table().sex.nunique() == 2  # the rest is drawn, not fixed
    wanted = pd.DataFrame({"sex": ["Female", "Male", "Male"], "unit": ["CCU", "MICU", "SICU"]})
    got = model.sample(static=wanted, seed=3).static_table()
    pd.testing.assert_frame_equal(got[wanted.columns], wanted)
    with pytest.raises(ValueError, match=r"'unit' has no level \['ICU'\]; its levels are \["):
        model.sample(3, conditions={"unit": "ICU"})
    with pytest.raises(ValueError, match=r"cannot condition on dynamic variables \['hr'\]"):
        model.sample(3, conditions={"hr": 80})
    with pytest.raises(ValueError, match="length must lie in 1..8"):
        model.sample(3, length=9)


def test_save_load_dispatch_and_bad_weights(trained, tmp_path):
    model, run = trained
    names = {p.name for p in run.iterdir()}
    assert {"model.json", "schema.yaml", "tokenizer.json", "weights.pt", "metrics.jsonl",
            "checkpoints"} <= names  # fmt: skip
    want = model.sample(8, seed=2, conditions={"sex": "Male"}).table
    for folder in (run, model.save(tmp_path / "saved")):
        again = hg.load(folder)
        assert isinstance(again, hg.HealthGym)
        pd.testing.assert_frame_equal(
            again.sample(8, seed=2, conditions={"sex": "Male"}).table, want
        )
    (tmp_path / "saved" / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights.pt"):
        hg.load(tmp_path / "saved")


def test_bad_input(toy):
    with pytest.raises(ValueError, match="fit expects a healthgym Cohort"):
        hg.HealthGym().fit(toy.table)
    with pytest.raises(ValueError, match="unknown settings"):
        hg.HealthGym(hidden=3)
    with pytest.raises(RuntimeError, match="not trained"):
        hg.HealthGym().sample(3)
    with pytest.raises(ValueError, match="n must be a positive number"):
        untrained(toy).sample(0)
