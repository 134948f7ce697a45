"""v1 trainer: config, curriculum, its metrics, reproducibility, learning (the loop's own
behaviour for every family: tests/training/test_loop.py)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from healthgym.models.layout import DesignLayout
from healthgym.models.v1 import trainer as trainer_module
from healthgym.models.v1.config import CURRICULA, V1Config
from healthgym.models.v1.network import generate
from healthgym.models.v1.trainer import V1Trainer
from healthgym.training.checkpoint import latest_checkpoint, list_checkpoints
from healthgym.training.loop import TrainingDiverged

LAYOUT = DesignLayout(n_features=8, real_idx=(0, 1), spans=((2, 4), (4, 8)))
# T=6 derives the curriculum (1, ..., 6). toy_data's 64 patients give stage pools of 64, 56,
# 48, 37, 29 and 19 patients, so batches of 32 make 2+2+2+2+1+1 = 10 generator steps per epoch.
TINY = V1Config(noise_dim=8, hidden=16, batch_size=32, epochs=2, device="cpu")


def toy_data(n: int = 64, length: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, length, 8)
    x[..., :2] = torch.rand(n, length, 2, generator=g)
    x[..., 2:4] = torch.eye(2)[torch.randint(0, 2, (n, length), generator=g)]
    x[..., 4:8] = torch.eye(4)[torch.randint(0, 4, (n, length), generator=g)]
    lengths = torch.randint(1, length + 1, (n,), generator=g)
    lengths[:8] = length
    x[torch.arange(length) >= lengths[:, None]] = float("nan")  # padding is never read
    return x, lengths


def fit(run_dir: Path, config: V1Config = TINY, **kw):
    trainer = V1Trainer(LAYOUT, config)
    return trainer, trainer.fit(*toy_data(), run_dir, progress=False, **kw)


def metrics(run_dir: Path) -> list[dict]:
    """Logged rows without wall-clock time."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def assert_same_weights(a: V1Trainer, b: V1Trainer) -> None:
    for net in ("generator", "critic"):
        sa, sb = getattr(a, net).state_dict(), getattr(b, net).state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), f"{net}.{k} differs"


# ---- config ------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    cfg = V1Config(curriculum=CURRICULA["hypotension"], lambda_corr=1.0, batch_size=128)
    assert V1Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert V1Config.from_dict(V1Config().to_dict()) == V1Config()
    with pytest.raises(ValueError, match="unknown"):
        V1Config.from_dict({"lr": 1e-3, "learning_rate": 1e-3})


@pytest.mark.parametrize(
    "longest, stages",
    [(48, (8, 16, 24, 32, 40, 48)), (60, (10, 20, 30, 40, 50, 60)), (5, (1, 2, 3, 4, 5))],
)
def test_derived_curriculum(longest: int, stages: tuple[int, ...]) -> None:
    assert V1Config().resolve_curriculum(longest) == stages


def test_published_curricula_and_bad_configs() -> None:
    assert CURRICULA["sepsis"] == tuple(range(1, 21))
    assert V1Config(curriculum=CURRICULA["art-for-hiv"]).resolve_curriculum(60)[-1] == 60
    with pytest.raises(ValueError, match="longest"):
        V1Config(curriculum=(10, 70)).resolve_curriculum(60)
    for bad in ({"curriculum": (3, 2)}, {"lr": 0}, {"betas": (0.9, 1.0)}, {"critic_iters": 0}):
        with pytest.raises(ValueError):
            V1Config(**bad)


# ---- runs -------------------------------------------------------------------------------


def test_fit_writes_a_complete_run(tmp_path: Path) -> None:
    trainer, result = fit(tmp_path)
    assert (result.epochs, result.steps, result.stopped_early) == (2, 20, None)
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert {r["L"] for r in rows} == {1, 2, 3, 4, 5, 6}
    assert set(rows[0]) == {"step", "epoch", "L", *trainer_module.LOSS_NAMES}
    assert (tmp_path / "learning_dynamics.png").stat().st_size > 0
    assert latest_checkpoint(tmp_path) == result.checkpoint
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "ckpt-000000010.pt",
        "ckpt-000000020.pt",
    ]


def test_seeded_runs_are_bit_identical(tmp_path: Path) -> None:
    a, _ = fit(tmp_path / "a")
    b, _ = fit(tmp_path / "b")
    assert_same_weights(a, b)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    c, _ = fit(tmp_path / "c", dataclasses.replace(TINY, seed=1))
    assert not torch.equal(a.generator.head[0].weight, c.generator.head[0].weight)


# ---- divergence and input checks ---------------------------------------------------------


def test_absurd_learning_rate_raises_training_diverged(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match=r"step \d+: \w+ = "):
        fit(tmp_path, dataclasses.replace(TINY, lr=1e6))
    assert not list_checkpoints(tmp_path)  # nothing saved for a bad state


@pytest.mark.parametrize("bad", ["out of range", "not one-hot", "lengths"])
def test_bad_inputs_are_rejected(tmp_path: Path, bad: str) -> None:
    x, lengths = toy_data()
    if bad == "out of range":
        x[0, 0, 0] = 1.5
    elif bad == "not one-hot":
        x[0, 0, 4:8] = 0.0
    else:
        lengths[0] = 7
    with pytest.raises(ValueError):
        V1Trainer(LAYOUT, TINY).fit(x, lengths, tmp_path, progress=False)


# ---- learning ----------------------------------------------------------------------------

LEVELS = (0.8, 0.15, 0.05)


def level_frequencies(x: np.ndarray) -> np.ndarray:
    return np.bincount(x[..., 1:].argmax(-1).ravel(), minlength=3) / x[..., 0].size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_finds_the_majority_level_and_moves_the_real_column(
    tmp_path: Path, seed: int
) -> None:
    """180 generator steps (~6 s) learn the dominant category and shift the real column.

    Toy: one real column, per patient U(0.7, 0.9), and one categorical with frequencies
    0.8 / 0.15 / 0.05, constant over time. Faithful v1 first collapses onto the majority level
    (spec section 6); covering the 15% and 5% levels took 600-900 steps in our trials and then
    oscillated, so a short test can only ask for the majority. To make that a real test, the
    majority is the level the untrained generator emits least: its argmax sits on one arbitrary
    level, so its TV is >= 0.8, while collapse onto the majority scores 0.2. Measured (seeds
    0-4): TV 0.95-0.97 -> 0.16-0.20; real-column mean 0.44-0.52 -> 0.55-0.64 (data: 0.8).
    """
    layout = DesignLayout(n_features=4, real_idx=(0,), spans=((1, 4),))
    cfg = V1Config(noise_dim=8, hidden=32, batch_size=64, epochs=15, lr=3e-3, seed=seed)
    trainer = V1Trainer(layout, cfg)

    def sample() -> np.ndarray:
        return np.concatenate(list(generate(trainer.generator, 500, 3, seed=99)))

    before = sample()
    target = np.zeros(3)
    target[np.argsort(level_frequencies(before), kind="stable")] = LEVELS  # least emitted first
    g = torch.Generator().manual_seed(seed)
    n, length = 256, 3
    x = torch.zeros(n, length, 4)
    x[..., 0] = (0.7 + 0.2 * torch.rand(n, 1, generator=g)).expand(n, length)
    levels = torch.multinomial(torch.tensor(target), n, replacement=True, generator=g)
    x[..., 1:] = torch.eye(3)[levels][:, None, :]
    real_freq, real_mean = level_frequencies(x.numpy()), x[..., 0].mean().item()

    result = trainer.fit(x, torch.full((n,), length), tmp_path, progress=False)
    after = sample()

    assert result.steps == 15 * 12  # curriculum (1, 2, 3) x 4 batches x 15 epochs
    tv_before = 0.5 * np.abs(level_frequencies(before) - real_freq).sum()
    tv_after = 0.5 * np.abs(level_frequencies(after) - real_freq).sum()
    assert tv_before > 0.7
    assert tv_after < 0.25, f"TV {tv_before:.2f} -> {tv_after:.2f}"
    mean_before, mean_after = before[..., 0].mean(), after[..., 0].mean()
    assert mean_before < real_mean - 0.2
    assert mean_before + 0.05 < mean_after < real_mean + 0.05, (mean_before, mean_after)
