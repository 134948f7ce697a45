"""The moving average of weights that the default model validates and keeps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import healthgym as hg
from healthgym.models.healthgym.config import HealthGymConfig
from healthgym.models.healthgym.tokenizer import Tokenizer
from healthgym.models.healthgym.trainer import HealthGymTrainer
from healthgym.training.averaging import WARMUP, WeightAverage
from helpers import make_table


def test_the_average_follows_the_updates_with_warm_up_then_the_decay():
    layer = nn.Linear(2, 1)
    start = layer.weight.detach().clone()
    avg = WeightAverage(layer, decay=0.9)
    expected = start.clone()
    for n in range(300):
        with torch.no_grad():
            layer.weight.add_(1.0)
        avg.update()
        keep = min(0.9, (1 + n) / (WARMUP + n))
        expected = keep * expected + (1 - keep) * layer.weight.detach()
    torch.testing.assert_close(avg.average[0], expected)
    # late updates keep the decay itself: the average lags a ramp by 0.9 / (1 - 0.9) steps
    lag = (layer.weight - avg.average[0]).mean().item()
    assert 8 < lag < 10
    avg.reset()  # a fresh start at the current weights, warm-up included
    assert avg.updates == 0 and torch.equal(avg.average[0], layer.weight)


def test_applied_swaps_in_the_average_and_always_restores_the_weights():
    layer = nn.Linear(3, 2)
    avg = WeightAverage(layer, decay=0.5)
    own = [p.detach().clone() for p in layer.parameters()]
    avg.average = [torch.zeros_like(p) for p in own]
    with avg.applied():
        assert all(torch.equal(p, torch.zeros_like(p)) for p in layer.parameters())
    assert all(torch.equal(p, o) for p, o in zip(layer.parameters(), own, strict=True))
    with pytest.raises(RuntimeError), avg.applied():
        raise RuntimeError("a failed validation")
    assert all(torch.equal(p, o) for p, o in zip(layer.parameters(), own, strict=True))


def test_state_round_trips_and_refuses_another_network():
    a = WeightAverage(nn.Linear(2, 2), 0.9)
    a.update()
    b = WeightAverage(nn.Linear(2, 2), 0.9)
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and all(
        torch.equal(x, y) for x, y in zip(a.average, b.average, strict=True)
    )
    with pytest.raises(ValueError, match="different network"):
        WeightAverage(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), 0.9).load_state_dict(
            a.state_dict()
        )
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(2, 2), 1.0)


def test_the_run_keeps_the_averaged_weights_that_validated_best(tmp_path):
    """The weights a run ends with are the average at its best epoch, not the last step's:
    they validate to the recorded best loss, and the raw weights at that epoch do not."""
    cohort = hg.Cohort(make_table(40, seed=2), id="pid", time="hour")
    cfg = HealthGymConfig(width=16, bins=8, fine=4, epochs=4, patience=10, average=0.8, seed=1)
    tokens = Tokenizer(cohort.schema, cfg.bins, cfg.fine).fit(cohort)
    data = tokens.transform(cohort, seed=cfg.seed)
    trainer = HealthGymTrainer(tokens, cfg)
    raw = {}
    end_epoch = trainer.end_epoch

    def spy(epoch: int) -> dict[str, float]:  # the raw weights' loss at each validation
        raw[epoch] = trainer._validate()
        return end_epoch(epoch)

    trainer.end_epoch = spy
    arrays = (data.static, data.dynamic, data.lengths)
    trainer.fit(*(torch.from_numpy(a) for a in arrays), tmp_path / "run", progress=False)
    best = trainer.counters["best_val"]
    assert trainer._validate() == pytest.approx(best, rel=1e-6)
    assert all(abs(v - best) > 1e-6 * abs(best) for v in raw.values())


def test_run_folders_without_the_setting_load_it_off(tmp_path):
    import json

    cohort = hg.Cohort(make_table(20, seed=4), id="pid", time="hour")
    model = hg.HealthGym(width=8, bins=4, fine=2, epochs=1, average=0.9)
    model.fit(cohort, tmp_path / "run", progress=False)
    meta_path = tmp_path / "run" / "model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["config"]["average"] == 0.9
    del meta["config"]["average"]
    meta_path.write_text(json.dumps(meta))
    assert hg.HealthGym.load(tmp_path / "run").config.average == 0.0
