"""HealthGymGAN networks: static head, length head, conditional sequence generator, pair critic.

Shapes: B batch, T steps, S static columns, D dynamic columns, Z noise size, H hidden size.
A patient is (static (B, S), dynamic (B, T, D), length (B,)). Statics are drawn once per
patient, the length from p(length | statics), the sequence given both; the critic scores
the pair (and the statics alone) and never sees a step past the length (packed LSTMs).
All noise comes from one torch.Generator (`draw`), so sampling is reproducible.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..layout import DesignLayout


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.LeakyReLU(0.1),
        nn.Linear(hidden, hidden), nn.LeakyReLU(0.1),
        nn.Linear(hidden, d_out),
    )  # fmt: skip


def packed(x: torch.Tensor, lengths: torch.Tensor) -> nn.utils.rnn.PackedSequence:
    return pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)


class Activation(nn.Module):
    """Logits (..., F) -> (sample, probs): sigmoid on reals; a Gumbel-softmax draw on each span.

    The draw's argmax is an exact draw from softmax(logits), so decoded levels and missing
    flags follow the generator's probabilities instead of rounding them (argmax of a plain
    softmax would turn a 30% missing rate into 0%). With `hard` the forward pass is that
    exact one-hot, like real rows, so the critic cannot tell fakes by their softness, and
    the gradient is the soft draw's (temperature `tau`; straight-through). `probs` (softmax,
    no noise) feeds the rate loss. `layout` None: a block with no columns.
    """

    def __init__(self, layout: DesignLayout | None, tau: float, hard: bool) -> None:
        super().__init__()
        self.spans, self.tau, self.hard = (layout.spans if layout else ()), tau, hard
        real_idx = list(layout.real_idx) if layout else []
        grouped = real_idx + [i for s, e in self.spans for i in range(s, e)]
        self.register_buffer("real_idx", torch.tensor(real_idx, dtype=torch.long))
        self.register_buffer("unpermute", torch.argsort(torch.tensor(grouped, dtype=torch.long)))

    def forward(self, logits: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits, u (..., F), u ~ U(0, 1) -> sample, probs (..., F) in design-column order."""
        reals = torch.sigmoid(logits.index_select(-1, self.real_idx))
        gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))
        draws = [
            torch.softmax((logits[..., s:e] + gumbel[..., s:e]) / self.tau, -1)
            for s, e in self.spans
        ]
        if self.hard:  # exact one-hots forward, the soft draw's gradient backward
            draws = [F.one_hot(d.argmax(-1), d.shape[-1]).to(d) - d.detach() + d for d in draws]
        probs = [torch.softmax(logits[..., s:e], -1) for s, e in self.spans]
        sample = torch.cat([reals, *draws], -1).index_select(-1, self.unpermute)
        return sample, torch.cat([reals, *probs], -1).index_select(-1, self.unpermute)


class StaticHead(nn.Module):
    """Static noise (B, Z) -> static logits (B, S): one draw per patient, never one per step."""

    def __init__(self, n_static: int, noise_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(noise_dim, hidden, n_static)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, S)


class LengthHead(nn.Module):
    """Statics (B, S) -> logits (B, T) over lengths 1..T; fitted by likelihood on real pairs."""

    def __init__(self, n_static: int, max_length: int, hidden: int) -> None:
        super().__init__()
        self.net = mlp(n_static, hidden, max_length)

    def forward(self, static: torch.Tensor) -> torch.Tensor:
        return self.net(static)  # (B, T)


class SequenceGenerator(nn.Module):
    """Step noise (B, T, Z), patient noise (B, Z), statics (B, S) -> logits (B, T, D), packed.

    The patient noise joins every step: with step noise alone, what sets a patient apart
    (a high heart rate all stay) must be pieced together from independent draws, which
    average out, and the generated patients come out too alike. The backward LSTM starts at
    each patient's last step, so the sequence knows where it ends.
    """

    def __init__(self, n_static: int, n_dynamic: int, noise_dim: int, hidden: int) -> None:
        super().__init__()
        d_in = 2 * noise_dim + n_static
        self.lstm = nn.LSTM(d_in, hidden, batch_first=True, bidirectional=True)
        self.head = mlp(2 * hidden, hidden, n_dynamic)

    def forward(
        self, z: torch.Tensor, z_patient: torch.Tensor, static: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        t = z.shape[1]
        per_patient = torch.cat([z_patient, static], dim=-1)[:, None, :].expand(-1, t, -1)
        x = torch.cat([z, per_patient], dim=-1)  # (B, T, 2Z + S)
        h, _ = self.lstm(packed(x, lengths))
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=t)  # (B, T, 2H)
        return self.head(h)  # (B, T, D)


class PairCritic(nn.Module):
    """(statics (B, S), dynamics (B, T, D), lengths (B,)) -> scores (B, 2), no sigmoid.

    Column 0 scores the patient: the static embedding joins every step (static-dynamic
    relations) and the last layer; padding is never read. Column 1 scores the statics alone,
    a second Wasserstein critic with its own penalty: inside the joint score one static
    column is 1 of S + T * D inputs and gets little of the critic's attention.
    """

    def __init__(self, n_static: int, n_dynamic: int, hidden: int) -> None:
        super().__init__()
        n_in = max(n_static, 1)
        self.static_net = nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.1))
        self.step_net = nn.Sequential(nn.Linear(n_dynamic + hidden, hidden), nn.LeakyReLU(0.1))
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(3 * hidden, 1)
        self.static_only = mlp(n_in, hidden, 1)

    def forward(self, static: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        s = static_input(static)  # (B, max(S, 1))
        e = self.static_net(s)  # (B, H)
        h = self.step_net(torch.cat([x, e[:, None, :].expand(-1, x.shape[1], -1)], -1))  # (B,T,H)
        _, (h_n, _) = self.lstm(packed(h, lengths))  # h_n (2, B, H): last forward, first backward
        joint = self.out(torch.cat([h_n[0], h_n[1], e], dim=-1))  # (B, 1)
        return torch.cat([joint, self.static_only(s)], dim=-1)  # (B, 2)


def static_input(static: torch.Tensor) -> torch.Tensor:
    """(B, S) -> (B, max(S, 1)): a cohort without statics conditions on one constant zero."""
    return static if static.shape[-1] else static.new_zeros(static.shape[0], 1)


class Generator(nn.Module):
    """The whole generator: statics from their own noise, a length given them, then the steps."""

    def __init__(
        self,
        static_layout: DesignLayout | None,
        dynamic_layout: DesignLayout,
        max_length: int,
        noise_dim: int,
        hidden: int,
        tau: float,
        hard: bool,
    ) -> None:
        super().__init__()
        n_static = static_layout.n_features if static_layout else 0
        self.n_static, self.n_dynamic = n_static, dynamic_layout.n_features
        self.max_length, self.noise_dim = max_length, noise_dim
        self.static_head = StaticHead(n_static, noise_dim, hidden) if n_static else None
        self.static_act = Activation(static_layout, tau, hard)
        self.length_head = LengthHead(max(n_static, 1), max_length, hidden)
        self.sequence = SequenceGenerator(n_static, dynamic_layout.n_features, noise_dim, hidden)
        self.dynamic_act = Activation(dynamic_layout, tau, hard)
        # Logit offsets of span columns that calibrate level and missing rates after training
        # (training/calibration.py); zero until then, and always zero on real columns.
        self.register_buffer("static_offset", torch.zeros(n_static))  # (S,)
        self.register_buffer("step_offset", torch.zeros(max_length, self.n_dynamic))  # (T, D)

    def statics(self, z: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, Z), u (B, S) -> sample, probs (B, S)."""
        if self.static_head is None:
            return z[:, :0], z[:, :0]
        return self.static_act(self.static_head(z) + self.static_offset, u)

    def length_logits(self, static: torch.Tensor) -> torch.Tensor:
        return self.length_head(static_input(static))  # (B, T)

    def lengths(self, static: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """static (B, S), u (B,) ~ U(0, 1) -> lengths (B,) in 1..T, drawn by inverse CDF."""
        with torch.no_grad():  # a discrete draw: no gradient flows through it
            cdf = torch.softmax(self.length_logits(static), dim=-1).cumsum(-1)  # (B, T)
        return (cdf < u[:, None]).sum(-1).clamp(max=self.max_length - 1) + 1

    def dynamics(
        self,
        z: torch.Tensor,
        z_patient: torch.Tensor,
        static: torch.Tensor,
        lengths: torch.Tensor,
        u: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, L, Z), z_patient (B, Z), static (B, S), lengths (B,), u (B, L, D) -> sample,
        probs (B, L, D). Steps past each length are zero, like the encoder's padding.
        """
        steps = torch.arange(z.shape[1], device=z.device)  # (L,)
        offset = self.step_offset[steps.clamp(max=self.max_length - 1)]  # (L, D), T-1's past T
        sample, probs = self.dynamic_act(self.sequence(z, z_patient, static, lengths) + offset, u)
        live = (steps < lengths[:, None])[..., None]
        return sample * live, probs * live


class Patients(NamedTuple):
    """A generated batch; `*_probs` are the noise-free span probabilities (rate loss)."""

    static: torch.Tensor  # (B, S)
    static_probs: torch.Tensor  # (B, S)
    lengths: torch.Tensor  # (B,)
    dynamic: torch.Tensor  # (B, L, D), zero past each length
    dynamic_probs: torch.Tensor  # (B, L, D)


def draw(
    gen: Generator,
    n: int,
    rng: torch.Generator,
    *,
    static: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    steps: int | None = None,
) -> Patients:
    """`n` patients from the noise of `rng`; given `static` (n, S) or `lengths` (n,) replace
    the heads' draws (conditional sampling, fixed lengths). Noise is drawn in a fixed order on
    the rng's device, so a seed gives the same patients whatever is given and on any device.
    """
    dev = next(gen.parameters()).device
    steps = steps or gen.max_length

    def noise(sampler: Any, *shape: int) -> torch.Tensor:
        return sampler(shape, generator=rng, device=rng.device).to(dev)

    # N(0, 1) inputs (v1 used U(0, 1), whose small spread left the static reals collapsed in
    # our tests); U(0, 1) for the Gumbel draws and the length's inverse CDF.
    z_static, z_patient = noise(torch.randn, n, gen.noise_dim), noise(torch.randn, n, gen.noise_dim)
    z = noise(torch.randn, n, steps, gen.noise_dim)
    u_static, u_length = noise(torch.rand, n, gen.n_static), noise(torch.rand, n)
    u = noise(torch.rand, n, steps, gen.n_dynamic)
    s, s_probs = gen.statics(z_static, u_static)
    if static is not None:
        s = s_probs = static.to(dev)
    if lengths is None:
        lengths = gen.lengths(s.detach(), u_length)
    lengths = lengths.to(dev)
    x, x_probs = gen.dynamics(z, z_patient, s, lengths, u)
    return Patients(s, s_probs, lengths, x, x_probs)
