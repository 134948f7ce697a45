"""The one training loop, for every model family: run folder, resume, limits, checkpoints."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import healthgym as hg
from healthgym.models.encoding import Encoder
from healthgym.models.gan.config import GANConfig
from healthgym.models.gan.model import block_layouts
from healthgym.models.gan.trainer import GANTrainer
from healthgym.models.healthgym.config import HealthGymConfig
from healthgym.models.healthgym.tokenizer import Tokenizer
from healthgym.models.healthgym.trainer import HealthGymTrainer
from healthgym.models.v1.config import V1Config
from healthgym.models.v1.model import design_layout, design_matrix
from healthgym.models.v1.trainer import V1Trainer
from healthgym.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
)
from healthgym.training.loop import TrainingDiverged
from helpers import make_table

FAMILIES = ("healthgym", "gan", "v1")
COHORT = hg.Cohort(make_table(24, seed=3), id="pid", time="hour")


def family_trainer(family: str, **settings: Any) -> tuple[Any, tuple[torch.Tensor, ...]]:
    """A tiny trainer of ``family`` and its data, three or four steps an epoch."""
    if family == "healthgym":
        cfg = HealthGymConfig(**{"width": 8, "epochs": 2, "device": "cpu", **settings})
        tokenizer = Tokenizer(COHORT.schema, cfg.bins, cfg.fine).fit(COHORT)
        t = tokenizer.transform(COHORT, seed=cfg.seed)
        data = tuple(torch.from_numpy(a) for a in (t.static, t.dynamic, t.lengths))
        return HealthGymTrainer(tokenizer, cfg), data
    encoder = Encoder(COHORT.schema).fit(COHORT)
    e = encoder.transform(COHORT)
    if family == "gan":
        tiny = {"noise_dim": 4, "hidden": 8, "batch_size": 8, "calibration_patients": 16}
        cfg = GANConfig(**{**tiny, "epochs": 2, "device": "cpu", **settings})
        data = tuple(torch.from_numpy(a) for a in (e.static, e.dynamic, e.lengths))
        return GANTrainer(*block_layouts(encoder), encoder.max_length, cfg), data
    tiny = {"noise_dim": 4, "hidden": 8, "batch_size": 8}
    cfg = V1Config(**{**tiny, "epochs": 2, "device": "cpu", **settings})
    x, lengths = torch.from_numpy(design_matrix(e)).float(), torch.from_numpy(e.lengths)
    return V1Trainer(design_layout(encoder), cfg), (x, lengths)


def fit(family: str, run_dir: Path, settings: dict | None = None, **kw: Any):
    trainer, data = family_trainer(family, **(settings or {}))
    return trainer, trainer.fit(*data, run_dir, progress=kw.pop("progress", False), **kw)


def leaves(state: Any, prefix: str = "") -> dict[str, Any]:
    """Every tensor and number of a nested state, by path."""
    if isinstance(state, dict):
        return {
            k: v for key, item in state.items() for k, v in leaves(item, f"{prefix}/{key}").items()
        }
    if isinstance(state, list | tuple):
        return {
            k: v for i, item in enumerate(state) for k, v in leaves(item, f"{prefix}/{i}").items()
        }
    return {prefix: state}


def assert_same_state(a: Any, b: Any) -> None:
    la, lb = leaves(a.state_dict()), leaves(b.state_dict())
    assert la.keys() == lb.keys()
    for k in la:
        if isinstance(la[k], torch.Tensor):
            assert torch.equal(la[k], lb[k]), k
        else:
            assert la[k] == lb[k], k


def metrics(run_dir: Path) -> list[dict]:
    """Logged rows without wall-clock time."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_run_folder_logs_every_step_and_is_never_overwritten(family, tmp_path, capsys):
    trainer, result = fit(family, tmp_path, progress=True)
    assert result.epochs == 2 and result.stopped_early is None
    rows = metrics(tmp_path)
    steps = [r["step"] for r in rows if set(trainer.guarded) <= set(r)]  # one row per step
    assert steps == list(range(1, result.steps + 1))
    assert (tmp_path / "learning_dynamics.png").stat().st_size > 0
    assert latest_checkpoint(tmp_path) == result.checkpoint
    per_epoch = result.steps // 2
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        f"ckpt-{per_epoch:09d}.pt",
        f"ckpt-{2 * per_epoch:09d}.pt",
    ]
    assert f"{result.steps}" in capsys.readouterr().err  # the progress bar counted the steps
    with pytest.raises(FileExistsError):  # never silently overwrite or append to a run
        fit(family, tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_mid_epoch_ends_identical_to_uninterrupted_run(family, tmp_path):
    whole, full = fit(family, tmp_path / "whole")
    _, cut = fit(family, tmp_path / "cut", stop_after_steps=full.steps // 2 + 1)
    assert cut.stopped_early == "stop_after_steps" and cut.epochs == 1
    assert load_checkpoint(cut.checkpoint)["batch"] == 1  # mid-epoch
    # A crash after the checkpoint leaves extra lines, the last one torn: resume drops them.
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": cut.steps + 1, "x": 0.0}) + '\n{"step": 99, "x')
    resumed, result = fit(family, tmp_path / "cut", resume=True)
    assert (result.steps, result.epochs, result.stopped_early) == (full.steps, 2, None)
    assert_same_state(whole, resumed)
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_with_more_epochs_continues_and_checks_settings_and_data(family, tmp_path):
    whole, _ = fit(family, tmp_path / "whole", {"epochs": 3})
    fit(family, tmp_path / "cont")
    resumed, result = fit(family, tmp_path / "cont", {"epochs": 3}, resume=True)
    assert result.epochs == 3
    assert_same_state(whole, resumed)
    with pytest.raises(ValueError, match="seed"):
        fit(family, tmp_path / "cont", {"epochs": 3, "seed": 7}, resume=True)
    trainer, data = family_trainer(family, epochs=3)
    other = tuple(d.flip(0) for d in data)  # the same patients in another order: other data
    with pytest.raises(ValueError, match="other data"):
        trainer.fit(*other, tmp_path / "cont", resume=True, progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_max_minutes_stops_after_a_step_and_resume_without_checkpoint_starts_fresh(
    family, tmp_path
):
    _, result = fit(family, tmp_path / "a", max_minutes=1e-6)
    assert (result.steps, result.stopped_early) == (1, "max_minutes")
    assert load_checkpoint(result.checkpoint)["step"] == 1
    with pytest.warns(UserWarning, match="nothing to resume .*: starting a new run"):
        _, fresh = fit(family, tmp_path / "b", resume=True)
    assert fresh.epochs == 2 and fresh.stopped_early is None


@pytest.mark.parametrize("family", FAMILIES)
def test_only_the_newest_three_checkpoints_are_kept(family, tmp_path):
    _, result = fit(family, tmp_path, {"epochs": 5})
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert len(names) == 3 and names[-1] == result.checkpoint.name
    assert not list((tmp_path / "checkpoints").iterdir())[3:]  # no temporary files left


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("damage", ["truncated", "empty", "pickle"])
def test_resume_sets_a_damaged_newest_checkpoint_aside(family, damage, tmp_path):
    whole, _ = fit(family, tmp_path / "whole")
    fit(family, tmp_path / "run")
    newest = latest_checkpoint(tmp_path / "run")
    ran = tmp_path / "pickle-ran"
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[:1000])
    elif damage == "empty":
        newest.write_bytes(b"")
    else:  # a pickle that would run code when loaded unsafely
        newest.write_bytes(pickle.dumps(_Exploit(str(ran))))
    with pytest.warns(UserWarning, match=newest.name):
        resumed, result = fit(family, tmp_path / "run", resume=True)
    assert not ran.exists()
    assert newest.with_name(newest.name + ".corrupt").exists()
    assert result.epochs == 2  # back to the epoch-1 checkpoint, epoch 2 redone exactly
    assert_same_state(whole, resumed)
    assert metrics(tmp_path / "run") == metrics(tmp_path / "whole")


class _Exploit:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("family", FAMILIES)
def test_another_familys_checkpoint_is_refused_and_kept(family, tmp_path):
    other = FAMILIES[(FAMILIES.index(family) + 1) % 3]
    fit(other, tmp_path)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ValueError, match=f"belongs to a '{other}' run"):
        fit(family, tmp_path, resume=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("family", FAMILIES)
def test_a_nan_loss_stops_the_run_and_the_last_checkpoint_still_loads(family, tmp_path):
    trainer, data = family_trainer(family)
    real_step, calls = trainer.step, [0]

    def nan_in_epoch_two(batch):
        losses = real_step(batch)
        calls[0] += 1
        return {k: float("nan") for k in losses} if calls[0] > per_epoch() else losses

    def per_epoch() -> int:  # the data is in place once fit has started
        return len(trainer.epoch_batches(0))

    trainer.step = nan_in_epoch_two
    with pytest.raises(TrainingDiverged, match=r"step \d+: .* = nan"):
        trainer.fit(*data, tmp_path, progress=False)
    limit = per_epoch()
    assert load_latest(tmp_path)[1]["step"] == limit
    assert max(r["step"] for r in metrics(tmp_path)) == limit  # the bad step is not logged


def test_failed_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises
        save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert load_checkpoint(path)["step"] == 1
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing keys", "empty"])
def test_damaged_checkpoint_raises_checkpoint_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 3, "w": torch.ones(1000)}, path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif damage == "empty":
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="ckpt.pt"):
        load_checkpoint(path, required=("step", "generator"))
