"""Differential privacy for the default model (issue 17): the per-patient gradients, the
budget, the DP tokenizer, the run folder's privacy block, resume, bad input and the report."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

import healthgym as hg
from healthgym.cli import main
from healthgym.models.healthgym.config import HealthGymConfig
from healthgym.models.healthgym.dp import accountant, sgd
from healthgym.models.healthgym.dp import tokenizer as dp_tokenizer
from healthgym.models.healthgym.network import sequence_nll
from healthgym.models.healthgym.tokenizer import Tokenizer
from healthgym.models.healthgym.trainer import build_model
from helpers import make_table

TINY = {"width": 8, "bins": 8, "fine": 4, "batch_size": 16}


@pytest.fixture(autouse=True)
def seeded_noise(monkeypatch):
    """Tests only: a known noise seed (a real run draws it from the system's entropy)."""
    monkeypatch.setattr(sgd, "noise_seed", lambda: 1234)  # the noise repeats: no guarantee


@pytest.fixture(scope="module")
def cohort() -> hg.Cohort:
    return hg.Cohort(make_table(64, seed=3), id="pid", time="hour")


@pytest.fixture
def dp_run(cohort, tmp_path):
    model = hg.HealthGym(**TINY, dp_epsilon=8.0, dp_epochs=2)
    return model.fit(cohort, tmp_path / "run", progress=False), tmp_path / "run"


# ---- pieces ----------------------------------------------------------------------------------
def test_loop_gru_is_nn_gru():
    torch.manual_seed(0)
    gru = torch.nn.GRU(6, 6, batch_first=True)
    loop = sgd.LoopGRU(gru)
    x, h = torch.randn(3, 5, 6), torch.randn(1, 3, 6)
    for args in ((x,), (x, h)):
        want, got = gru(*args), loop(*args)
        for a, b in zip(want, got, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert loop.to_gru().state_dict().keys() == gru.state_dict().keys()


def test_per_patient_gradients_are_each_patients_own(cohort):
    tok = Tokenizer(cohort.schema, 8, 4).fit(cohort)
    t = tok.transform(cohort)
    net = build_model(tok, HealthGymConfig(width=8, dropout=0.0))
    net.sequence.gru = sgd.LoopGRU(net.sequence.gru)
    s, d, n = (torch.from_numpy(a[:5]) for a in (t.static, t.dynamic, t.lengths))
    d = d[:, : int(n.max())]
    grads, losses = sgd.per_patient_gradients(sgd._SequenceLoss(net.sequence), s, d, n)
    for i in range(5):
        net.zero_grad()
        loss = sequence_nll(net.sequence, s[i : i + 1], d[i : i + 1], n[i : i + 1]).sum()
        loss.backward()
        assert losses[i].item() == pytest.approx(loss.item(), rel=1e-5)
        for name, p in net.sequence.named_parameters():
            torch.testing.assert_close(grads[f"sequence.{name}"][i], p.grad, rtol=1e-4, atol=1e-6)


def test_each_part_of_each_patient_is_clipped(cohort):
    cfg = HealthGymConfig(**TINY, dp_epsilon=8.0, dp_max_grad_norm=0.5)
    tok = Tokenizer(cohort.schema, 8, 4).fit(cohort)
    t = tok.transform(cohort)
    trainer = sgd.PrivateTrainer(tok, cfg, accountant.Plan.make(cfg, len(t.lengths)))
    trainer.prepare(*(torch.from_numpy(a) for a in (t.static, t.dynamic, t.lengths)))
    for i in range(3):
        sums, _ = trainer._clipped_sums(torch.tensor([i]), mask_seed=i)
        for part in ("statics.", "sequence."):
            norm = math.sqrt(
                sum(float(g.pow(2).sum()) for k, g in sums.items() if k.startswith(part))
            )
            assert 0 < norm <= 0.5 + 1e-5


def test_each_step_adds_the_planned_noise(cohort):
    cfg = HealthGymConfig(**TINY, dp_epsilon=8.0)
    tok = Tokenizer(cohort.schema, 8, 4).fit(cohort)
    t = tok.transform(cohort)
    plan = accountant.Plan.make(cfg, len(t.lengths))
    empty = dataclasses.replace(plan, sample_rate=1e-12)  # no patient: the update is noise
    trainer = sgd.PrivateTrainer(tok, cfg, empty)
    trainer.prepare(*(torch.from_numpy(a) for a in (t.static, t.dynamic, t.lengths)))
    seen: dict[str, torch.Tensor] = {}
    params = dict(trainer.model.named_parameters())
    trainer.opt.step = lambda: seen.update({k: p.grad.clone() for k, p in params.items()})
    trainer.step((0, 0))
    noise = torch.cat([g.flatten() for g in seen.values()]) * (empty.sample_rate * plan.patients)
    sd = plan.noise_multiplier * plan.max_grad_norm * math.sqrt(2)  # two parts, each clipped
    assert len(noise) > 5_000 and float(noise.std()) == pytest.approx(sd, rel=0.05)
    assert abs(float(noise.mean())) < 0.05 * sd
    assert trainer.books.history[-1] == (plan.noise_multiplier, empty.sample_rate, 1)


def test_opacus_accounting_the_plan_on_its_own_finds_it_within_budget():
    """Opacus' accountant, stepped through the plan one step at a time with its own orders,
    spends at most epsilon, and a 2% smaller noise multiplier would spend more: the plan's
    search is checked by a computation that shares none of its code."""
    from opacus.accountants import RDPAccountant

    for eps in (1.0, 3.0, 10.0):
        plan = accountant.Plan.make(HealthGymConfig(dp_epsilon=eps), 3200)

        def spent(sigma: float, plan: accountant.Plan = plan) -> float:
            books = RDPAccountant()
            books.step(noise_multiplier=plan.tokenizer_noise, sample_rate=1.0)
            for _ in range(plan.steps):
                books.step(noise_multiplier=sigma, sample_rate=plan.sample_rate)
            assert books.history[-1][2] == plan.steps  # repeated steps merged
            return books.get_epsilon(plan.delta)

        assert 0.98 * eps <= spent(plan.noise_multiplier) <= eps
        assert spent(0.98 * plan.noise_multiplier) > eps


def test_the_plan_spends_the_budget_and_no_more():
    for eps in (1.0, 3.0, 10.0):
        cfg = HealthGymConfig(dp_epsilon=eps)
        plan = accountant.Plan.make(cfg, 3200)
        assert plan.delta == pytest.approx(0.1 / 3200) and plan.steps == 8 * 25
        history = [*plan.start, (plan.noise_multiplier, plan.sample_rate, plan.steps)]
        assert 0.98 * eps <= accountant.epsilon_of(history, plan.delta) <= eps
        assert accountant.epsilon_of(plan.start, plan.delta) <= plan.tokenizer_share * eps
    with pytest.raises(ValueError, match="too small to train 3200 patients"):
        accountant.Plan.make(HealthGymConfig(dp_epsilon=1e-3), 3200)


def test_the_private_tokenizer_finds_ranges_quantiles_and_stays():
    rng = np.random.default_rng(0)
    n = 4000
    table = pd.DataFrame(
        {
            "pid": np.repeat(np.arange(n), 3),
            "t": np.tile(np.arange(3), n) + 1,
            "hr": np.round(rng.normal(80, 12, 3 * n), 0),
            "urine": np.round(rng.lognormal(4, 1, 3 * n), 1),
        }
    )
    table.loc[5, "hr"] = 5000.0  # an outlier: clipped to the range found
    cohort = hg.Cohort(table, id="pid", time="t")
    schema = cohort.schema.with_overrides(urine={"transform": "boxcox", "min": 0.0})
    cohort = hg.Cohort(table, schema)
    plan = accountant.Plan.make(HealthGymConfig(dp_epsilon=50.0), n)
    tok, info = dp_tokenizer.fit_tokenizer(cohort, 32, 4, plan, np.random.default_rng(1))
    assert (tok.max_length, tok.time_origin) == (3, 1)
    hr, urine = tok.dynamic_columns
    assert hr.decimals == 0 and urine.decimals == 1
    assert 10 <= hr.grid[0] <= 50 and 110 <= hr.grid[-1] <= 1000  # decades; not 5000
    assert info["ranges"]["urine"]["min"] == 0.0 and info["ranges"]["urine"]["from"] != "schema"
    for col, x in ((hr, table["hr"]), (urine, table["urine"])):
        want = np.quantile(x, [0.1, 0.5, 0.9])
        got = np.interp([0.1, 0.5, 0.9], np.linspace(0, 1, len(col.grid)), col.grid)
        assert np.allclose(got, want, rtol=0.1)


def test_the_private_tokenizer_puts_treatments_last_like_the_exact_one():
    """The simulator sets a step's treatment and draws the next state: the DP tokenizer
    orders the token columns as `Tokenizer.fit` does (actions last within a step)."""
    rng = np.random.default_rng(0)
    n = 500
    table = pd.DataFrame(
        {
            "pid": np.repeat(np.arange(n), 3),
            "t": np.tile(np.arange(3), n),
            "vent": rng.integers(0, 2, 3 * n),
            "hr": np.round(rng.normal(80, 12, 3 * n), 0),
        }
    )
    cohort = hg.Cohort(table, id="pid", time="t")
    cohort.schema["vent"].role = "action"
    plan = accountant.Plan.make(HealthGymConfig(dp_epsilon=50.0), n)
    tok, _ = dp_tokenizer.fit_tokenizer(cohort, 32, 4, plan, np.random.default_rng(1))
    exact = Tokenizer(cohort.schema, 32, 4).fit(cohort)
    names = [c.name for c in tok.dynamic_columns]
    assert names == [c.name for c in exact.dynamic_columns] == ["hr", "vent"]


# ---- the run folder --------------------------------------------------------------------------
def test_a_private_run_states_its_guarantee(dp_run, cohort):
    model, run = dp_run
    block = json.loads((run / "model.json").read_text())["privacy"]
    assert block == model.privacy and block["epsilon"] == 8.0
    assert 0 < block["epsilon_spent"] <= 8.0 and block["status"].startswith("finished")
    assert block["delta"] == pytest.approx(0.1 / 64) and block["delta_rule"].endswith("(default)")
    assert block["steps"] == block["planned_steps"] == 2 * round(64 / 16)
    assert block["sample_rate"] == 16 / 64 and block["max_grad_norm"] == 1.0
    assert block["noise_multiplier"] > 0 and block["accountant"].startswith("RDP")
    assert block["covered"] and any("schema" in n for n in block["not_covered"])
    assert model.result.stopped_early == "privacy_budget"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any("val_nll" in r for r in rows)  # no validation on real patients
    assert rows[-1]["epsilon"] == pytest.approx(block["epsilon_spent"])
    loaded = hg.load(run)
    assert loaded.privacy == block
    pd.testing.assert_frame_equal(loaded.sample(6, seed=2).table, model.sample(6, seed=2).table)
    assert json.loads((loaded.save(run.parent / "copy") / "model.json").read_text())["privacy"]


def test_a_run_without_privacy_has_no_block(cohort, tmp_path):
    model = hg.HealthGym(width=8, epochs=1).fit(cohort, tmp_path / "run", progress=False)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert "privacy" not in meta and model.privacy is None
    assert all(meta["config"][k] is None for k in ("dp_epsilon", "dp_delta"))


def test_resume_keeps_the_accountant_and_the_tokenizer(cohort, dp_run, tmp_path):
    whole = dp_run[0].privacy
    run = tmp_path / "part"
    settings = {**TINY, "dp_epsilon": 8.0, "dp_epochs": 2}
    part = hg.HealthGym(**settings).fit(cohort, run, max_minutes=1e-6, progress=False)
    assert part.result.steps == 1 and part.privacy["epsilon_spent"] < whole["epsilon_spent"]
    tokenizer = (run / "tokenizer.json").read_bytes()
    with pytest.raises(ValueError, match="cannot resume with other settings"):
        hg.HealthGym(**{**settings, "dp_epsilon": 9.0}).fit(cohort, run, resume=True)
    done = hg.HealthGym(**settings).fit(cohort, run, resume=True, progress=False)
    assert (run / "tokenizer.json").read_bytes() == tokenizer  # released once, not refitted
    assert done.result.steps == whole["steps"]
    assert done.privacy["epsilon_spent"] == pytest.approx(whole["epsilon_spent"])
    more = hg.HealthGym(**settings, epochs=50).fit(cohort, run, resume=True, progress=False)
    assert more.result.steps == whole["steps"] and more.privacy["epsilon_spent"] <= 8.0


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, message",
    [
        ({"dp_epsilon": 0.0}, "dp_epsilon must be a number > 0"),
        ({"dp_epsilon": -1.0}, "dp_epsilon must be a number > 0"),
        ({"dp_epsilon": math.inf}, "dp_epsilon must be a number > 0"),
        ({"dp_epsilon": 1.0, "dp_delta": 0.0}, r"dp_delta must be in \(0, 1\)"),
        ({"dp_epsilon": 1.0, "dp_delta": 1.0}, r"dp_delta must be in \(0, 1\)"),
        ({"dp_delta": 1e-5}, "dp_delta needs dp_epsilon"),
        ({"dp_epsilon": 1.0, "dp_tokenizer_share": 1.0}, "dp_tokenizer_share must be in"),
    ],
)
def test_bad_settings_are_value_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        hg.HealthGym(**settings)


@pytest.fixture
def files(tmp_path, cohort):
    data, schema = tmp_path / "data.csv", tmp_path / "schema.yaml"
    cohort.to_csv(data)
    cohort.schema.to_yaml(schema)
    return data, schema


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dp-epsilon", "0"], "dp_epsilon must be a number > 0, got 0.0"),
        (["--dp-epsilon", "-2"], "dp_epsilon must be a number > 0"),
        (["--dp-epsilon", "1", "--dp-delta", "0"], r"dp_delta must be in (0, 1), got 0.0"),
        (["--dp-epsilon", "1", "--dp-delta", "1.5"], r"dp_delta must be in (0, 1)"),
        (["--dp-epsilon", "1", "--model", "gan"], "--model gan has no private training"),
        (["--dp-epsilon", "1", "--model", "v1"], "--model v1 has no private training"),
        (["--dp-epsilon", "1", "--nproc", "2"], "runs in one process"),
        (["--dp-epsilon", "1e-6"], "is too small to train 64 patients"),
        (["--dp-epsilon", "1", "--no-schema"], "--dp-epsilon needs --schema FILE"),
    ],
)
def test_bad_input_on_the_command_line(files, tmp_path, extra, message):
    data, schema = files
    where = ["--id", "pid", "--time", "hour"] if "--no-schema" in extra else ["--schema", schema]
    extra = [a for a in extra if a != "--no-schema"]
    out = tmp_path / "run"
    args = ["train", data, *where, "--out", out, "--quiet", *extra]
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    *said, last = r.output.splitlines()  # the cohort and the model are said before fitting
    assert last.startswith("error: ") and message in last, r.output
    assert "Traceback" not in r.output and not any(line.startswith("error") for line in said)
    assert not out.exists()  # nothing written


# ---- the command line and the report ---------------------------------------------------------
def test_train_and_evaluate_state_the_guarantee(files, tmp_path):
    data, schema = files
    run, synth = tmp_path / "run", tmp_path / "synth.csv"
    r = CliRunner().invoke(
        main,
        [str(a) for a in ("train", data, "--schema", schema, "--out", run, "--quiet",
                          "--dp-epsilon", "5", "--epochs", "1", "--batch-size", "16")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "privacy: (" in r.output and "-differentially private per patient" in r.output
    assert (
        CliRunner().invoke(main, ["sample", str(run), "-n", "40", "-o", str(synth)]).exit_code == 0
    )
    real = hg.Cohort.from_csv(data, schema)
    held = hg.Cohort(make_table(30, seed=9), real.schema, strict=False)
    held_path = tmp_path / "holdout.csv"
    held.to_csv(held_path)
    report_dir = tmp_path / "report"
    r = CliRunner().invoke(
        main,
        [str(a) for a in ("evaluate", data, synth, "--run", run, "--holdout", held_path,
                          "-o", report_dir)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "privacy guarantee: DP epsilon spent per patient" in r.output
    assert "note: privacy guarantee: (" in r.output and "does not cover: the schema" in r.output
    metrics = json.loads((report_dir / "metrics.json").read_text())
    spent = json.loads((run / "model.json").read_text())["privacy"]["epsilon_spent"]
    assert metrics["guarantee"]["epsilon_spent"] == spent <= 5
    page = (report_dir / "index.html").read_text()
    assert "<h2>Privacy guarantee</h2>" in page and "Not covered" in page


def test_the_report_says_when_a_run_has_no_guarantee(cohort):
    report = hg.evaluate(cohort, cohort, guarantee={})
    assert report.metrics["guarantee"] == {"private": False}
    assert any(n.startswith("privacy guarantee: none") for n in report.notes)
    assert "guarantee.epsilon_spent" not in set(report.summary["key"])


# ---- the canary audit ------------------------------------------------------------------------
def canaries(n: int, seed: int, first_id: int) -> pd.DataFrame:
    """Outlier patients: every step's values drawn at random (no persistence, any range)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n):
        sex, unit = rng.choice(["Female", "Male"]), rng.choice(["MICU", "SICU", "CCU"])
        age = float(np.round(rng.uniform(20, 90), 1))
        for t in range(5):
            rows.append(
                {"pid": first_id + k, "hour": t, "sex": sex, "unit": unit, "age": age,
                 "hr": float(np.round(rng.uniform(40, 180), 1)),
                 "lactate": float(np.round(rng.uniform(0.2, 12), 1)),
                 "vent": int(rng.integers(0, 2)), "gcs": int(rng.integers(3, 6))}
            )  # fmt: skip
    return pd.DataFrame(rows)


def canary_auroc(model: hg.HealthGym, members: pd.DataFrame, others: pd.DataFrame) -> float:
    """Membership inference on the canaries: each scored by the trained model's likelihood of
    its steps (white-box, stronger than attacks on the synthetic data); AUROC of members
    (trained on) vs others (never seen)."""
    from sklearn.metrics import roc_auc_score

    def nll(table: pd.DataFrame) -> np.ndarray:
        cohort = dp_tokenizer.cut_stays(hg.Cohort(table, model.schema), model.tokenizer.max_length)
        t = model.tokenizer.transform(cohort, seed=0)
        tensors = (torch.from_numpy(a) for a in (t.static, t.dynamic, t.lengths))
        with torch.no_grad():
            return sequence_nll(model.network.sequence, *tensors).numpy()

    inside, outside = nll(members), nll(others)
    labels = np.r_[np.ones(len(inside)), np.zeros(len(outside))]
    return float(roc_auc_score(labels, -np.r_[inside, outside]))


def test_canary_audit():
    """Canaries trained on are told from unseen ones without DP, not with it (epsilon 1)."""
    base = make_table(40, seed=5)
    members, others = canaries(12, 1, 1000), canaries(12, 2, 2000)
    schema = hg.Cohort(pd.concat([base, members, others]), id="pid", time="hour").schema
    train = hg.Cohort(pd.concat([base, members], ignore_index=True), schema)
    small = {"width": 48, "bins": 8, "fine": 4}  # the same network with and without DP
    memorise = {"epochs": 40, "patience": 40, "lr_patience": 40, "dropout": 0.0, "weight_decay": 0}
    plain = hg.HealthGym(**small, **memorise, val_fraction=0.02).fit(train, progress=False)
    private_settings = {**small, "dp_epsilon": 1.0, "batch_size": 16, "dp_epochs": 8}
    dp = hg.HealthGym(**private_settings).fit(train, progress=False)
    assert dp.privacy["epsilon_spent"] <= 1.0
    held = set(train.ids[trainer_split(train, plain)])  # the one validation patient
    without = canary_auroc(plain, members[~members["pid"].isin(held)], others)
    with_dp = canary_auroc(dp, members, others)
    print(f"canary membership AUROC: {without:.3f} without DP, {with_dp:.3f} with epsilon 1")
    assert without >= 0.9  # memorised: membership shows
    assert with_dp <= 0.7  # near chance (for epsilon 1 no attack's AUROC exceeds ~0.73)


def trainer_split(cohort: hg.Cohort, model: hg.HealthGym) -> np.ndarray:
    from healthgym.models.healthgym.trainer import split_patients

    return split_patients(len(cohort.ids), model.config)[1]
