"""The default model's sampler (issue 18) against the one it replaced (the code of commit
de4f823, kept in `benchmarks.reference_healthgym`): the same conditionals, the same
distribution, the same patients for the same seed."""

import numpy as np
import pytest
import torch
from scipy import stats

import healthgym as hg
from benchmarks import reference_healthgym as old
from healthgym.models.healthgym import layers, network
from healthgym.models.healthgym.layers import embedding_table
from healthgym.models.healthgym.sampler import draw_statics, draw_steps, head_matrices, pick
from helpers import make_table


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cohort = hg.Cohort(make_table(160, seed=4), id="pid", time="hour")
    # last_value off: the reference sampler predates it (its sampler: test_last_value.py)
    settings = {"width": 16, "batch_size": 16, "epochs": 4, "bins": 8, "fine": 4}
    settings["last_value"] = False
    return hg.HealthGym(**settings).fit(cohort, tmp_path_factory.mktemp("run"), progress=False)


def test_folded_tables_and_heads_equal_the_modules(model):
    seq = model.network.sequence
    for emb in (*seq.column_in.tables, *model.network.statics.embed.tables):
        tokens = torch.arange(emb.table.num_embeddings)
        torch.testing.assert_close(embedding_table(emb)[tokens], emb(tokens))
    z = torch.randn(7, seq.column_pos.shape[1])
    for (weight, bias), head in zip(head_matrices(seq.heads, 0.5), seq.heads, strict=True):
        torch.testing.assert_close(torch.nn.functional.linear(z, weight, bias), head(z) / 0.5)


def test_pick_is_the_inverse_cdf():
    logits = torch.tensor([[0.0, -200.0, 0.0], [-200.0, 1.0, -200.0]])  # a zero-probability token
    u = torch.tensor([0.0, 1 - 2**-24])  # the smallest and the largest float32 uniform
    assert pick(logits, u).tolist() == [0, 1]
    u = torch.tensor([0.2, 0.49, 0.51, 1 - 2**-24])
    assert pick(logits[:1].expand(4, 3), u).tolist() == [0, 0, 2, 2]


def _uniform_draws(uniforms: torch.Tensor):
    """A stand-in for the old `_draw`: the old logits, drawn by `pick` from `uniforms` in the
    order the new sampler reads them."""
    flat = iter(uniforms.reshape(-1, uniforms.shape[-1]))

    def draw(logits, rng, temperature):
        return pick(logits.float() / temperature, next(flat))

    return draw


def test_the_new_sampler_computes_the_old_conditionals(model, monkeypatch):
    net, b = model.network, 300
    given = net.statics.unknown(b, torch.device("cpu"))
    static = draw_statics(net.statics, given, torch.Generator().manual_seed(1), 0.8)
    u = torch.rand(b, static.shape[1], generator=torch.Generator().manual_seed(1)).T
    monkeypatch.setattr(old, "_draw", _uniform_draws(u))
    assert torch.equal(old.draw_statics(net.statics, given, None, 0.8), static)

    lengths = static[:, -1] + 1
    steps = draw_steps(net.sequence, static, lengths, torch.Generator().manual_seed(2), 0.8)
    t, d = int(lengths.max()), len(net.sequence.vocab)
    u = torch.rand(t, d, b, generator=torch.Generator().manual_seed(2))
    monkeypatch.setattr(old, "_draw", _uniform_draws(u))
    assert torch.equal(old.draw_steps(net.sequence, static, lengths, None, 0.8), steps)


def _token_counts(draw_statics_fn, draw_steps_fn, net, n: int, seed: int) -> list[np.ndarray]:
    """Per static column and per dynamic column (over every live step): token counts."""
    rng = torch.Generator().manual_seed(seed)
    static = draw_statics_fn(net.statics, net.statics.unknown(n, torch.device("cpu")), rng)
    lengths = static[:, -1] + 1
    steps = draw_steps_fn(net.sequence, static, lengths, rng)
    live = torch.arange(steps.shape[1]) < lengths[:, None]
    counts = [np.bincount(static[:, j], minlength=v) for j, v in enumerate(net.statics.vocab)]
    counts += [
        np.bincount(steps[..., j][live], minlength=v) for j, v in enumerate(net.sequence.vocab)
    ]
    return counts


def test_the_new_sampler_draws_the_old_distribution(model):
    """Token frequencies of 6,000 patients from each sampler agree within sampling error
    (chi-square per column, Bonferroni at 0.001), and the same seed gives the same tokens."""
    net = model.network
    new = _token_counts(draw_statics, draw_steps, net, 6000, seed=0)
    before = _token_counts(old.draw_statics, old.draw_steps, net, 6000, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(new, _token_counts(
        draw_statics, draw_steps, net, 6000, seed=0), strict=True))  # fmt: skip
    p_values = []
    for a, b in zip(new, before, strict=True):
        seen = (a + b) > 0
        if seen.sum() > 1:
            p_values.append(stats.chi2_contingency(np.stack([a[seen], b[seen]]))[1])
    assert len(p_values) >= 8
    assert min(p_values) > 0.001 / len(p_values), p_values


def test_same_seed_same_patients(model):
    a, b = model.sample(40, seed=9).table, model.sample(40, seed=9).table
    assert a.equals(b)
    assert not a.equals(model.sample(40, seed=10).table)


def test_fused_losses_equal_the_per_column_ones(model):
    """Training's one-product heads and joined embedding tables (issue 18) compute the loss
    of the per-column modules they replaced."""
    net = model.network.eval()
    tokens = model.tokenizer.transform(hg.Cohort(make_table(30, seed=8), id="pid", time="hour"))
    static, dynamic, lengths = (torch.from_numpy(a) for a in old.tokens_of(tokens))
    torch.testing.assert_close(
        network.sequence_nll(net.sequence, static, dynamic, lengths),
        old.sequence_nll(net.sequence, static, dynamic, lengths),
    )
    want = old.static_nll(net.statics, static, torch.Generator().manual_seed(3))
    got = network.static_nll(net.statics, static, torch.Generator().manual_seed(3))
    torch.testing.assert_close(got, want)


def test_dropout_keeps_its_rate_and_scale():
    block = layers.Block(8, dropout=0.2).train()
    x = torch.zeros(200_000, 8)
    h = block.down(torch.nn.functional.gelu(block.up(block.norm(x))))
    out = block(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.005
    torch.testing.assert_close(out[kept], (h / 0.8)[kept])
    assert torch.equal(block.eval()(x), h)
