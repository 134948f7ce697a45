"""The last-value kernel one column at a time (`step_kernel`, issue 29): the step drawer
draws what the network gives re-run over the whole history, with and without levels, at any
temperature."""

import pytest
import torch

import healthgym as hg
from healthgym.models.healthgym.config import HealthGymConfig
from healthgym.models.healthgym.sampler import StepDrawer, pick
from healthgym.models.healthgym.tokenizer import Tokenizer
from healthgym.models.healthgym.trainer import build_model
from helpers import make_table


@pytest.mark.parametrize("levels", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_drawer_draws_what_the_whole_history_gives(levels, temperature):
    """From the same uniforms, token by token, on a kernel far from its start (its terms
    matter) and real steps read in between."""
    cohort = hg.Cohort(make_table(40, seed=3), id="pid", time="hour")
    tok = Tokenizer(cohort.schema, 8, 4).fit(cohort)
    seq = build_model(tok, HealthGymConfig(width=16, levels=levels)).sequence.eval()
    assert seq.last is not None and seq.last.levels == levels
    with torch.no_grad():
        for p in seq.last.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    tokens = tok.transform(cohort)
    static, dynamic = torch.from_numpy(tokens.static), torch.from_numpy(tokens.dynamic)
    drawer = StepDrawer(seq, static, temperature)
    steps, d, b = dynamic.shape[1], len(seq.vocab), len(static)
    u = torch.rand(steps, d, b, generator=torch.Generator().manual_seed(1)).double()
    for t in range(steps):
        drawn = drawer.draw(u[t])
        prefix = dynamic[:, : t + 1].clone()
        with torch.no_grad():
            for j, v in enumerate(seq.vocab):
                logits = seq.last_logits(static, prefix)[:, j, :v] / temperature
                prefix[:, t, j] = pick(logits, u[t, j])
        assert torch.equal(drawn, prefix[:, t]), t
        drawer.commit(dynamic[:, t])  # the real step: histories with values seen and missed
    assert (dynamic[..., 2] == seq.last.missing[2]).any()  # lactate missing in some steps
