"""DP-SGD on the default model: Poisson batches, per-patient gradients (`torch.func`), each
part clipped, Gaussian noise, every step in the accountant's books."""

from __future__ import annotations

import math
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ....training.loop import fingerprint
from ....training.seeding import derive_seed
from ..config import HealthGymConfig
from ..network import sequence_nll
from ..tokenizer import Tokenizer
from ..trainer import HealthGymTrainer
from .accountant import Plan, accountant, epsilon_of
from .tokenizer import start_heads

CHUNK = 32  #: patients per vmap call (bounds the memory of per-patient gradients)
_STATICS_MASK = 11  #: seeds the known/unknown masks of the static model's loss


class LoopGRU(nn.Module):
    """nn.GRU (one layer, batch first) written out step by step, with nn.GRU's parameter
    names and values, so torch.func can take per-patient gradients through it."""

    def __init__(self, gru: nn.GRU) -> None:
        super().__init__()
        if gru.num_layers != 1 or gru.bidirectional or not gru.batch_first or not gru.bias:
            raise ValueError("LoopGRU copies a one-layer, batch-first GRU with biases")
        self.input_size, self.hidden_size = gru.input_size, gru.hidden_size
        for name, p in gru.named_parameters():
            self.register_parameter(name, nn.Parameter(p.detach().clone()))

    def forward(
        self, x: torch.Tensor, h: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        state = x.new_zeros(x.shape[0], self.hidden_size) if h is None else h[0]
        gates_in = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # (B, T, 3H)
        out = []
        for t in range(x.shape[1]):
            r_i, z_i, n_i = gates_in[:, t].chunk(3, dim=-1)
            r_h, z_h, n_h = F.linear(state, self.weight_hh_l0, self.bias_hh_l0).chunk(3, dim=-1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            state = (1 - z) * torch.tanh(n_i + r * n_h) + z * state
            out.append(state)
        return torch.stack(out, dim=1), state[None]

    def to_gru(self) -> nn.GRU:
        gru = nn.GRU(self.input_size, self.hidden_size, batch_first=True)
        gru.load_state_dict(self.state_dict())
        return gru.to(self.weight_ih_l0.device)


class _SequenceLoss(nn.Module):
    def __init__(self, sequence: nn.Module) -> None:
        super().__init__()
        self.sequence = sequence

    def forward(self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> Any:
        return sequence_nll(self.sequence, static, dynamic, lengths)


class _StaticLoss(nn.Module):
    """`network.static_nll` with the known columns given (drawn outside vmap)."""

    def __init__(self, statics: nn.Module) -> None:
        super().__init__()
        self.statics = statics

    def forward(self, static: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        model, n = self.statics, static.shape[1]
        inputs = torch.where(known, static, model.unknown(static.shape[0], static.device))
        ce = torch.stack(
            [
                F.cross_entropy(lg, static[:, j], reduction="none")
                for j, lg in enumerate(model(inputs))
            ],
            1,
        )
        return (ce * ~known).sum(1) * n / (n - known.sum(1))


def static_masks(b: int, n: int, rng: torch.Generator, device: torch.device) -> torch.Tensor:
    """(B, S) known columns, drawn as `network.static_nll` draws them."""
    known_count = torch.randint(0, n, (b, 1), generator=rng, device=device)
    rank = torch.rand(b, n, generator=rng, device=device).argsort(1).argsort(1)
    in_order = torch.rand(b, 1, generator=rng, device=device) < 0.5
    rank = torch.where(in_order, torch.arange(n, device=device), rank)
    return rank < known_count


def per_patient_gradients(
    module: nn.Module, *inputs: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({parameter: (B, *shape) gradient of each patient's loss}, (B,) losses) of a module
    whose forward maps a batch of inputs to per-patient losses."""
    from torch.func import functional_call, grad, vmap

    params = {k: p.detach() for k, p in module.named_parameters()}
    buffers = dict(module.named_buffers())

    def loss(p: dict[str, torch.Tensor], *one: torch.Tensor) -> tuple[torch.Tensor, Any]:
        value = functional_call(module, (p, buffers), tuple(t[None] for t in one)).sum()
        return value, value.detach()

    per = vmap(grad(loss, has_aux=True), in_dims=(None, *[0] * len(inputs)), randomness="different")
    return per(params, *inputs)


def noise_seed() -> int:
    """A seed for the noise, the Poisson batches and the tokenizer's histograms, from the
    operating system's entropy: never saved, never from `seed` (a run whose noise seed is
    known has no guarantee)."""
    return secrets.randbits(63)


class PrivateTrainer(HealthGymTrainer):
    """DP-SGD on the whole `PatientModel`; see the module docstring. Keeps `HealthGymTrainer`'s
    network, dropout streams and run-folder format; replaces its schedule."""

    distributable = False

    def __init__(
        self,
        tokens: Tokenizer,
        config: HealthGymConfig,
        plan: Plan,
        marginals: dict[str, list[float]] | None = None,
    ) -> None:
        super().__init__(tokens, config)
        self.plan, self.tokens, self.marginals = plan, tokens, marginals
        self.model.sequence.gru = LoopGRU(self.model.sequence.gru)

    def prepare(self, static: torch.Tensor, dynamic: torch.Tensor, lengths: torch.Tensor) -> str:
        if len(lengths) != self.plan.patients:
            raise ValueError(f"the plan is for {self.plan.patients} patients, got {len(lengths)}")
        cfg = self.config
        self.model.to(self.device)
        self.train_idx, self.val_idx = np.arange(len(lengths)), np.arange(0)
        self.data = [t.to(self.device) for t in (static, dynamic, lengths)]
        self.parts = {"statics": self.model.statics, "sequence": self.model.sequence}
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.counters: dict[str, Any] = {"steps": 0, "loss_sum": 0.0, "patients": 0, "lr": cfg.lr}
        self.books = accountant(self.plan.start)  # Opacus' RDPAccountant
        self.secret = torch.Generator().manual_seed(noise_seed())
        self.dropout_rng = None
        self.validated = True
        return fingerprint(static, dynamic, lengths)

    # ---- the loop's hooks --------------------------------------------------------------------
    def start(self) -> None:
        """The heads start at the tokenizer's noisy token counts (not the data's); the
        statics are trained with the steps, not first on their own."""
        if self.marginals:
            start_heads(self.model, self.tokens, self.marginals)

    def epoch_batches(self, epoch: int) -> list[tuple[int, int]]:
        """(epoch, index) per step; each step draws its Poisson batch when it runs."""
        return [(epoch, b) for b in range(self.plan.steps_per_epoch)]

    def step(self, batch: tuple[int, int]) -> dict[str, float]:
        epoch, index = batch
        plan, c = self.plan, self.counters
        if c["steps"] >= plan.steps:  # never reached: stop_reason ends the run first
            raise RuntimeError("the privacy budget is spent: no further step is taken")
        n = plan.patients
        chosen = torch.rand(n, generator=self.secret) < plan.sample_rate
        ids = torch.from_numpy(np.flatnonzero(chosen.numpy())).to(self.device)
        self.model.train()
        with self._dropout_stream(epoch, fresh=index == 0):
            sums, losses = self._clipped_sums(
                ids, derive_seed(self.config.seed, _STATICS_MASK, c["steps"])
            )
        value = float(losses.mean()) if len(ids) else 0.0
        if not math.isfinite(value):  # the loop's guard stops the run; nothing released
            return {"nll": value}
        sd = plan.noise_multiplier * plan.max_grad_norm * math.sqrt(len(self.parts))
        for name, p in self.model.named_parameters():
            noise = torch.normal(0.0, sd, p.shape, generator=self.secret).to(self.device)
            p.grad = (sums[name] + noise) / (plan.sample_rate * n)
        lr = self.config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * c["steps"] / plan.steps)))
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.books.step(noise_multiplier=plan.noise_multiplier, sample_rate=plan.sample_rate)
        c["steps"] += 1
        c["lr"] = lr
        c["loss_sum"] += float(losses.sum())
        c["patients"] += len(ids)
        self.validated = False
        return {"nll": value, "patients": float(len(ids))}

    def end_epoch(self, epoch: int) -> dict[str, float]:
        c = self.counters
        train = c["loss_sum"] / max(c["patients"], 1)
        c["loss_sum"], c["patients"] = 0.0, 0
        return {"train_nll": train, "lr": c["lr"], "epsilon": self.epsilon_spent()}

    def stop_reason(self) -> str | None:
        return "privacy_budget" if self.counters["steps"] >= self.plan.steps else None

    def finish(self, run_dir: Path) -> bool:
        """The last weights are the model's (no validation picks others); the GRU becomes
        nn.GRU again for sampling."""
        if isinstance(self.model.sequence.gru, LoopGRU):
            self.model.sequence.gru = self.model.sequence.gru.to_gru()
        self.model.eval()
        self.best_val = None
        return False

    def planned_steps(self, per_epoch: int) -> int | None:
        return self.plan.steps

    def state_dict(self) -> dict[str, Any]:
        weights = self.model.state_dict()
        return {
            "model": weights,
            "best": weights,  # what `read_weights` samples when weights.pt is missing
            "optimizer": self.opt.state_dict(),
            "counters": dict(self.counters),
            "dropout_rng": self.dropout_rng,
            "privacy": {
                "plan": self.plan.to_dict(),
                "history": [list(h) for h in self.books.history],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state["privacy"]
        if saved["plan"] != self.plan.to_dict():
            raise ValueError("the checkpoint's privacy plan differs from this run's")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.counters = dict(state["counters"])
        self.dropout_rng = state["dropout_rng"]
        self.books = accountant(saved["history"])
        self.validated = self.counters["patients"] == 0

    # ---- privacy -----------------------------------------------------------------------------
    def epsilon_spent(self) -> float:
        """Epsilon of what this run has released so far (the tokenizer and its steps)."""
        return epsilon_of(self.books.history, self.plan.delta)

    def _clipped_sums(
        self, ids: torch.Tensor, mask_seed: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Sum over the patients of each part's gradient clipped to the norm; their losses."""
        sums = {k: torch.zeros_like(p) for k, p in self.model.named_parameters()}
        losses = []
        static, dynamic, lengths = self.data
        rng = torch.Generator(self.device).manual_seed(mask_seed)
        for chunk in ids.split(CHUNK) if len(ids) else ():  # an empty Poisson batch: no sum
            s, d, n = static[chunk], dynamic[chunk], lengths[chunk]
            d = d[:, : int(n.max())]
            known = static_masks(len(chunk), s.shape[1], rng, self.device)
            total = torch.zeros(len(chunk), device=self.device)
            for module, inputs in (
                (_StaticLoss(self.model.statics), (s, known)),
                (_SequenceLoss(self.model.sequence), (s, d, n)),
            ):
                grads, loss = per_patient_gradients(module, *inputs)
                total += loss
                norm = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
                factor = (self.plan.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
                for name, g in grads.items():  # the wrappers name parameters as the model does
                    sums[name] += torch.tensordot(factor, g, dims=1)
            losses.append(total)
        return sums, torch.cat(losses) if losses else torch.zeros(0)
