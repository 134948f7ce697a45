"""The default model's memory of each variable's last observed value and its kernel (issue 15):
the history it reads, the sampler against the model, the missing share left to the heads,
the start fitted to the transitions, old run folders, and persistence learned from few
patients."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import healthgym as hg
from healthgym.models.healthgym import model as model_module
from healthgym.models.healthgym import network, sampler, warm_start
from healthgym.models.healthgym.config import DROPOUT, SMALL_DROPOUT, HealthGymConfig
from healthgym.models.healthgym.kernel import AGES, LastValue
from healthgym.models.healthgym.sampler import draw_steps, pick
from healthgym.models.healthgym.tokenizer import Tokenizer, held
from healthgym.models.healthgym.trainer import build_model
from helpers import make_table

# A real variable (4 bins of 2 sub-bins, a missing token 4) and a level variable (3 levels).
SCALES = [(4, 4, 2, True), (4, 4, 2, True), (-1, 3, 1, False)]
GROUPS, VOCAB = [0, 0, 1], [5, 2, 3]


def test_history_is_the_last_observed_value_its_age_the_mean_and_count():
    kernel = LastValue(SCALES, GROUPS, VOCAB, width=4)
    steps = torch.tensor([[[1, 1, 0], [4, 0, 2], [4, 0, 1], [3, 0, 1], [2, 1, 0]]])
    last, has, age, mean, count = kernel.history(steps)
    assert count[0, :, 0].tolist() == [0, 1, 1, 1, 2] and count[0, :, 2].tolist() == [0, 1, 2, 3, 4]
    assert has[0, :, 0].tolist() == [False, True, True, True, True]
    assert last[0, 1:, 0].tolist() == [1, 1, 1, 3] and last[0, 1:, 1].tolist() == [1, 1, 1, 0]
    assert age[0, :, 0].tolist() == [0, 1, 2, 3, 1]  # missing at steps 1 and 2
    assert age[0, :, 2].tolist() == [0, 1, 1, 1, 1]
    u = [(1 + 1.5 / 2) / 4, (3 + 0.5 / 2) / 4]  # (coarse + (fine + 0.5) / F) / B
    torch.testing.assert_close(mean[0, 4, :2], torch.full((2,), sum(u) / 2))
    torch.testing.assert_close(mean[0, 2, 2], torch.tensor((0.5 + 2.5) / 2 / 3))
    unseen = kernel.history(torch.tensor([[[4, 0, 0], [4, 0, 0], [1, 0, 0]]]))
    assert unseen[2][0, :, 0].tolist() == [0, AGES + 1, AGES + 1]  # not seen one step back


def test_the_kernel_leaves_the_missing_share_to_the_heads():
    kernel = LastValue(SCALES, GROUPS, VOCAB, width=4)
    heads = torch.randn(6, 3, 5).masked_fill(
        torch.arange(5) >= torch.tensor(VOCAB)[:, None], -torch.inf
    )
    logits = kernel.combine(heads, torch.randn(6, 3, 5) * 3, slice(None))
    p, q = torch.softmax(heads, -1), torch.softmax(logits, -1)
    torch.testing.assert_close(q[:, 0, 4], p[:, 0, 4])  # the real's missing token
    assert (q[:, 1:] - p[:, 1:]).abs().max() > 0.01  # values move (no missing token there)
    assert torch.equal(q == 0, p == 0)  # padding stays impossible


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cohort = hg.Cohort(make_table(60, seed=4), id="pid", time="hour")
    settings = {"width": 16, "batch_size": 16, "epochs": 2, "bins": 8, "fine": 4, "levels": True}
    return hg.HealthGym(**settings).fit(cohort, tmp_path_factory.mktemp("run"), progress=False)


def test_the_sampler_draws_from_the_model(trained):
    """Each drawn token is the one `pick` takes from the teacher-forced logits (heads and
    kernel, at the temperature) with the sampler's uniform: the sampler is the model."""
    seq = trained.network.sequence
    assert seq.last is not None and trained.config.last_value and seq.last.levels
    with torch.no_grad():  # a kernel far from its start, so that it matters
        for p in seq.last.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    given = trained.network.statics.unknown(200, torch.device("cpu"))
    static = sampler.draw_statics(trained.network.statics, given, torch.Generator())
    lengths = static[:, -1] + 1
    steps = draw_steps(seq, static, lengths, torch.Generator().manual_seed(2), 0.7)
    t, d = int(lengths.max()), len(seq.vocab)
    u = torch.rand(t, d, 200, generator=torch.Generator().manual_seed(2)).double()
    with torch.no_grad():
        logits = seq.logits(static, steps[:, :t]) / 0.7
        for k in (1, t):
            torch.testing.assert_close(
                seq.last_logits(static, steps[:, :k]), logits[:, k - 1] * 0.7, atol=1e-4, rtol=1e-4
            )
    j = int(torch.nonzero(seq.last.missing >= 0)[0])  # lactate's coarse token
    assert (steps[..., j] == seq.last.missing[j]).any()  # missing values were drawn
    for k in range(t):
        live = lengths > k
        for j in range(d):
            assert torch.equal(pick(logits[:, k, j], u[k, j])[live], steps[live, k, j]), (k, j)


def test_start_at_transitions_fits_the_steps():
    cohort = hg.Cohort(make_table(40, seed=1), id="pid", time="hour")
    tok = Tokenizer(cohort.schema, 8, 4).fit(cohort)
    net = build_model(tok, HealthGymConfig(width=8, dropout=0.0))
    t = tok.transform(cohort)
    static, dynamic, lengths = (torch.from_numpy(a) for a in (t.static, t.dynamic, t.lengths))
    live = torch.arange(dynamic.shape[1]) < lengths[:, None]
    heads = net.sequence.heads
    warm_start.start_at_marginals(heads, warm_start.token_counts(heads, dynamic[live]))
    before = network.sequence_nll(net.sequence, static, dynamic, lengths).mean()
    rows = warm_start.transition_rows(lengths, torch.Generator().manual_seed(0))
    features = warm_start.transition_features(net.sequence.last, static, dynamic, rows)
    warm_start.start_at_transitions(net.sequence, features)
    after = network.sequence_nll(net.sequence, static, dynamic, lengths).mean()
    assert after < before
    assert net.sequence.last.bias.abs().sum() > 0


def test_run_folders_without_the_setting_load_it_off(trained, tmp_path):
    folder = trained.save(tmp_path / "new")
    meta = json.loads((folder / "model.json").read_text())
    assert meta["config"]["last_value"] is True
    del meta["config"]["last_value"]  # as model.json files written before issue 15
    assert hg.HealthGym.from_meta(folder, meta).config.last_value is False
    assert hg.HealthGym.from_meta(folder, meta, last_value=True).config.last_value is True
    assert hg.load(folder).config.last_value is True
    del meta["config"]["levels"]  # as model.json files written before the levels
    assert hg.HealthGym.from_meta(folder, meta, last_value=True).config.levels is False


def persistent_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Each patient keeps a level of its own: lag-1 autocorrelation about 0.95."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0, 1, n)
    rows = [
        {"pid": p, "t": t, "x": level[p] + rng.normal(0, 0.2), "y": rng.normal()}
        for p in range(n)
        for t in range(6)
    ]
    return pd.DataFrame(rows)


def lag1(table: pd.DataFrame) -> float:
    nxt = table.groupby("pid").x.shift(-1)
    keep = nxt.notna()
    return float(np.corrcoef(table.x[keep], nxt[keep])[0, 1])


def test_persistence_is_learned_from_few_patients():
    """100 patients, a few seconds: the values persist as the real ones do (measured: real
    0.960, synthetic 0.940; with last_value=False, trained as long, 0.811)."""
    cohort = hg.Cohort(persistent_table(100), id="pid", time="t")
    model = hg.HealthGym(width=16, epochs=8, bins=8, fine=8).fit(cohort, progress=False)
    real, synth = lag1(cohort.table), lag1(model.sample(300, seed=0).table)
    assert real > 0.9 and synth > real - 0.06, (real, synth)


def test_a_value_whose_tokens_repeat_is_held():
    """`hold` (the model's sampling with last_value): a binned real whose tokens are its
    patient's last observed ones keeps that value, across missing steps; others are drawn."""
    x = np.array([1.0, 1.1, np.nan, 1.3, 2.0, 2.1, 5.0])
    tokens = np.array([[3, 1], [3, 1], [4, 0], [3, 1], [3, 1], [3, 2], [3, 2]])
    pid = np.array([0, 0, 0, 0, 1, 1, 1])
    out = held(x, tokens, pid)
    np.testing.assert_array_equal(out, [1.0, 1.0, np.nan, 1.0, 2.0, 2.1, 2.1])
    cohort = hg.Cohort(make_table(30, seed=2), id="pid", time="hour")
    tok = Tokenizer(cohort.schema, 4, 2).fit(cohort)
    t = tok.transform(cohort)
    t.dynamic[:, 1:] = t.dynamic[:, :1]  # every step as the first
    a, b = (tok.inverse_transform(t.static, t.dynamic, t.lengths, hold=h) for h in (True, False))
    assert (a.groupby("pid").hr.nunique() == 1).all()
    assert (b.groupby("pid").hr.nunique() > 1).any()
    assert a.vent.equals(b.vent)  # levels decode as before


# Two reals of 4 bins x 2 sub-bins (missing token 4), one binary static.
LEVEL_SCALES = [(4, 4, 2, True)] * 4
LEVEL_GROUPS, LEVEL_VOCAB = [0, 0, 1, 1], [5, 2, 5, 2]


def test_levels_are_the_regression_on_the_statics_and_the_other_variables():
    """x's coarse token is 2 s or 2 s + 1 (s the static), y is x in the same step: the fitted level
    of x follows s, y's follows x's value at this step (drawn before y), and x's does not read
    y's value at this step (drawn after x) but y's last one."""
    kernel = LastValue(LEVEL_SCALES, LEVEL_GROUPS, LEVEL_VOCAB, width=4, static_vocab=[2],
                       static_reads=[True])  # fmt: skip
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 2, (2000, 1), generator=g)
    x = 2 * s[:, 0] + torch.randint(0, 2, (2000,), generator=g)  # coarse 0-1 or 2-3
    fine = torch.randint(0, 2, (2000,), generator=g)
    tokens = torch.stack([x, fine, x, fine], 1)
    last = tokens[torch.randperm(2000, generator=g)]  # unrelated last values
    has = torch.ones(2000, 4, dtype=torch.bool)
    warm_start.fit_levels(kernel, (tokens, last, has, None, s))
    level = kernel.level_of(s, last, has, tokens)
    place = kernel.place(tokens)
    for v in (0, 1):  # x's level: the mean place of x given s
        mean = place[s[:, 0] == v, 0].mean()
        torch.testing.assert_close(level[s[:, 0] == v, 0], mean.expand((s[:, 0] == v).sum()),
                                   atol=0.02, rtol=0)  # fmt: skip
    # y reads x now (the ridge penalty shrinks the slope a little)
    assert (level[:, 2] - place[:, 0]).abs().max() < 0.05
    assert torch.corrcoef(torch.stack([level[:, 2], place[:, 0]]))[0, 1] > 0.99
    assert torch.equal(level[:, 2], level[:, 3])  # a fine column reads its variable's level
    moved = tokens.clone()
    moved[:, 2] = 3 - moved[:, 2]  # y at this step moves: x's level must not see it
    torch.testing.assert_close(kernel.level_of(s, last, has, moved)[:, 0], level[:, 0])
    unread = LastValue(LEVEL_SCALES, LEVEL_GROUPS, LEVEL_VOCAB, width=4, static_vocab=[2],
                       static_reads=[False])  # fmt: skip
    warm_start.fit_levels(unread, (tokens, last, has, None, s))
    assert unread.level_of(s, last, has, tokens)[:, 0].std() < 0.01  # no static read: one level


def level_table(n: int, seed: int = 0) -> pd.DataFrame:
    """A lab whose patient level is 3 units higher in men, drifting around it."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n):
        sex = rng.choice(["Female", "Male"])
        level = 10 + 3 * (sex == "Male") + rng.normal(0, 1)
        rows += [{"pid": p, "t": t, "sex": sex, "x": level + rng.normal(0, 0.3)} for t in range(6)]
    return pd.DataFrame(rows)


def test_levels_keep_a_static_difference_in_the_first_values():
    """The men's first values lie 3 units above the women's; the model draws them so (an
    untrained model's differ by about nothing)."""
    cohort = hg.Cohort(level_table(200), id="pid", time="t")
    model = hg.HealthGym(width=16, epochs=6, bins=8, fine=4, levels=True)
    model.fit(cohort, progress=False)
    assert model.network.sequence.last.levels
    first = model.sample(600, seed=0).table.groupby("pid").first()
    gap = first.x[first.sex == "Male"].mean() - first.x[first.sex == "Female"].mean()
    assert 2.4 < gap < 3.6, gap


def test_dropout_by_default_from_a_cohort_size_decided_once(tmp_path, monkeypatch):
    cohort = hg.Cohort(level_table(40), id="pid", time="t")
    settings = {"width": 8, "epochs": 1, "bins": 4, "fine": 2}
    small = hg.HealthGym(**settings).fit(cohort, tmp_path / "small", progress=False)
    assert small.config.dropout == SMALL_DROPOUT and small.network.sequence.last.levels
    monkeypatch.setattr(model_module, "SMALL_BELOW", 40)
    large = hg.HealthGym(**settings).fit(cohort, tmp_path / "large", progress=False)
    assert large.config.dropout == DROPOUT != SMALL_DROPOUT
    saved = json.loads((tmp_path / "large" / "model.json").read_text())["config"]
    assert saved["dropout"] == DROPOUT  # what a resume and `hg.load` read
    assert hg.load(tmp_path / "large").config.dropout == DROPOUT
    mlp = [m for m in small.network.modules() if isinstance(m, torch.nn.Dropout)]
    assert mlp and all(m.p == SMALL_DROPOUT for m in mlp)
