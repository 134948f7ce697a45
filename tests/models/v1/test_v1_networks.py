"""Networks and losses of Health Gym v1 at toy sizes."""

import json

import numpy as np
import pytest
import torch

from healthgym.models.layout import DesignLayout
from healthgym.models.v1.network import (
    Critic,
    Generator,
    correlation_loss,
    generate,
    gradient_penalty,
    pearson_matrix,
    sample_noise,
)

# Reals are deliberately not first, to check the column bookkeeping.
LAYOUT = DesignLayout(n_features=8, real_idx=(0, 7), spans=((1, 3), (3, 7)))
NOISE, HIDDEN = 8, 16


def rng(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_batch(b: int, length: int, seed: int = 0) -> torch.Tensor:
    g = rng(seed)
    x = torch.zeros(b, length, LAYOUT.n_features)
    x[..., [0, 7]] = torch.rand(b, length, 2, generator=g)
    x[..., 1:3] = torch.eye(2)[torch.randint(0, 2, (b, length), generator=g)]
    x[..., 3:7] = torch.eye(4)[torch.randint(0, 4, (b, length), generator=g)]
    return x


def test_layout_round_trips_through_json() -> None:
    assert DesignLayout.from_dict(json.loads(json.dumps(LAYOUT.to_dict()))) == LAYOUT


@pytest.mark.parametrize(
    "real_idx, spans",
    [((0, 1), ((1, 3),)), ((0,), ((1, 2),)), ((0,), ((1, 3),)), ((0, 9), ((1, 3),))],
    ids=["overlap", "width-1 span", "uncovered column", "out of range"],
)
def test_layout_rejects_inconsistent_columns(real_idx, spans) -> None:
    with pytest.raises(ValueError):
        DesignLayout(n_features=4, real_idx=real_idx, spans=spans)


def test_generator_rows_are_schema_true() -> None:
    torch.manual_seed(0)
    gen = Generator(LAYOUT, NOISE, HIDDEN)
    out = gen(sample_noise(5, 7, NOISE, rng(), "cpu"))
    assert out.shape == (5, 7, LAYOUT.n_features)
    reals = out[..., list(LAYOUT.real_idx)]
    assert ((reals > 0) & (reals < 1)).all()
    for s, e in LAYOUT.spans:
        span = out[..., s:e]
        assert (span >= 0).all()
        torch.testing.assert_close(span.sum(-1), torch.ones(5, 7))


# Two spans of width 2 share a softmax block; the width-3 span has its own.
GROUPED = DesignLayout(n_features=9, real_idx=(2, 8), spans=((0, 2), (3, 6), (6, 8)))


def test_generator_softmax_blocks_equal_one_softmax_per_span() -> None:
    torch.manual_seed(0)
    gen = Generator(GROUPED, noise_dim=NOISE, hidden=HIDDEN).double()
    z = sample_noise(3, 4, NOISE, rng(), "cpu").double()
    logits = gen.head(gen.lstm(z)[0])
    expected = torch.empty_like(logits)
    expected[..., [2, 8]] = torch.sigmoid(logits[..., [2, 8]])
    for s, e in GROUPED.spans:
        expected[..., s:e] = torch.softmax(logits[..., s:e], dim=-1)
    torch.testing.assert_close(gen(z), expected, rtol=1e-12, atol=1e-12)
    # A checkpoint from before the width blocks holds its own column order: ignored on load.
    old = {**gen.state_dict(), "unpermute": torch.arange(GROUPED.n_features)}
    again = Generator(GROUPED, noise_dim=NOISE, hidden=HIDDEN).double()
    again.load_state_dict(old)
    torch.testing.assert_close(again(z), expected, rtol=1e-12, atol=1e-12)


def test_critic_folded_embedding_equals_per_span_products() -> None:
    """The critic's one (F x H) input product is the MLP on [reals, span_j @ E_j, ...]."""
    torch.manual_seed(0)
    critic = Critic(GROUPED, hidden=HIDDEN).double()
    x = torch.rand(3, 4, GROUPED.n_features, generator=rng(), dtype=torch.float64)
    parts = [x[..., [2, 8]]]
    parts += [
        x[..., s:e] @ emb.weight for (s, e), emb in zip(GROUPED.spans, critic.embeds, strict=True)
    ]
    h = critic.mlp(torch.cat(parts, dim=-1))
    _, (h_n, _) = critic.lstm(h)
    expected = critic.out(torch.cat([h_n[0], h_n[1]], dim=-1)).squeeze(-1)
    torch.testing.assert_close(critic(x), expected, rtol=1e-12, atol=1e-12)
    critic(x).sum().backward()  # every embedding still gets its gradient
    assert all(emb.weight.grad.abs().sum() > 0 for emb in critic.embeds)
    assert set(critic.state_dict()) == set(Critic(GROUPED, hidden=HIDDEN).state_dict())
    assert not any("input_base" in k or "embed_" in k for k in critic.state_dict())


def test_critic_scores_one_number_per_sequence() -> None:
    torch.manual_seed(0)
    assert Critic(LAYOUT, HIDDEN)(one_hot_batch(5, 7)).shape == (5,)


def test_critic_ignores_padding_when_given_lengths() -> None:
    torch.manual_seed(0)
    critic = Critic(LAYOUT, HIDDEN)
    x, lengths = one_hot_batch(4, 6), torch.tensor([6, 2, 1, 4])
    padded = critic(x, lengths)
    alone = torch.stack([critic(x[i : i + 1, :n])[0] for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(padded, alone)
    x[1, 2:] = 0.5  # changing padding changes nothing
    torch.testing.assert_close(critic(x, lengths), padded)


def test_gradient_penalty_double_backward_on_cpu() -> None:
    torch.manual_seed(0)
    gen, critic = Generator(LAYOUT, NOISE, HIDDEN), Critic(LAYOUT, HIDDEN)
    with torch.no_grad():
        fake = gen(sample_noise(4, 5, NOISE, rng(), "cpu"))
    gp = gradient_penalty(critic, one_hot_batch(4, 5), fake, rng(1))
    assert gp.ndim == 0 and torch.isfinite(gp) and gp > 0
    gp.backward()  # second derivative through the LSTM
    grads = [p.grad for p in critic.lstm.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in gen.parameters())  # fakes are detached


def test_pearson_matrix_matches_numpy_and_zero_variance_is_zero() -> None:
    rows = torch.rand(200, 5, generator=rng(), dtype=torch.float64)
    rows[:, 2] = 0.3  # constant column
    corr = pearson_matrix(rows)
    assert not corr.isnan().any()
    keep = [0, 1, 3, 4]
    np.testing.assert_allclose(corr[keep][:, keep], np.corrcoef(rows[:, keep].T), atol=1e-12)
    assert (corr[2] == 0).all() and (corr[:, 2] == 0).all()


def test_correlation_loss_zero_iff_matrices_match() -> None:
    fake = torch.rand(4, 6, 5, generator=rng())
    fake[..., 3] = 1.0  # zero variance must give finite values and gradients
    fake.requires_grad_(True)
    target = pearson_matrix(fake.detach().reshape(-1, 5))
    for thresholded in (False, True):
        assert correlation_loss(fake, target, thresholded, rng()).item() == pytest.approx(
            0, abs=1e-6
        )
    other = target.clone()
    other[0, 1] = other[1, 0] = 0.9
    for thresholded in (False, True):
        loss = correlation_loss(fake, other, thresholded, rng())
        assert loss > 0
        (grad,) = torch.autograd.grad(loss, fake)
        assert torch.isfinite(grad).all()


def test_thresholded_correlation_loss_needs_a_generator() -> None:
    with pytest.raises(ValueError):
        correlation_loss(torch.rand(2, 3, 4), torch.eye(4), thresholded=True)


def test_generate_is_seeded_and_batched() -> None:
    torch.manual_seed(0)
    gen = Generator(LAYOUT, NOISE, HIDDEN)
    chunks = list(generate(gen, 10, 4, LAYOUT, seed=3, batch_size=4))
    assert [c.shape for c in chunks] == [(4, 4, 8), (4, 4, 8), (2, 4, 8)]
    assert all(c.dtype == np.float32 for c in chunks)
    again = np.concatenate(list(generate(gen, 10, 4, seed=3, batch_size=4)))
    np.testing.assert_array_equal(np.concatenate(chunks), again)
    assert all(p.grad is None for p in gen.parameters())
    with pytest.raises(ValueError):
        generate(gen, 1, 4, DesignLayout(2, (0, 1), ()))
