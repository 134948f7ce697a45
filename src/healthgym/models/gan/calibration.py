"""Rate calibration: nudge the generator's span logits until level and missing rates match.

A WGAN matches the share of each level and of missing values only roughly in a few CPU
minutes, and the rate loss pins them only as far as it can without hurting the rest. After
training, each span column of each step (and of the statics) gets a logit offset so the
generator's expected rates equal the real ones, found by iterative proportional fitting on
generated patients: a softmax span multiplied by target / current and renormalised. This
moves only those marginal rates; how they co-vary with the rest is what the GAN learned.
"""

from __future__ import annotations

import torch

from .losses import Targets, live_mask
from .network import Generator, draw

#: Rates are floored here before the log ratio, so a level the generator never produces
#: (or the data never has) moves by a bounded step per round.
RATE_FLOOR = 1e-4


def calibrate_rates(
    gen: Generator, tg: Targets, patients: int, rounds: int, rng: torch.Generator
) -> dict[str, float]:
    """Fit `gen`'s logit offsets in place; returns the largest rate gap before and after.

    Every round draws the same `patients` generated patients (rng state restored), so the
    fit converges instead of chasing sampling noise.
    """
    state, gaps = rng.get_state(), []
    for r in range(rounds + 1):
        rng.set_state(state)
        static_rates, step_rates, reached = _rates(gen, tg, patients, rng)
        gap = torch.cat([(step_rates - tg.step_rates)[reached].flatten(),
                         static_rates - tg.static_rates])  # fmt: skip
        gaps.append(float(gap.abs().max()) if gap.numel() else 0.0)
        if r == rounds:
            break
        with torch.no_grad():
            gen.static_offset[tg.static_cols] += _log_ratio(tg.static_rates, static_rates)
            step = _log_ratio(tg.step_rates, step_rates) * reached[:, None]  # (T, J)
            gen.step_offset[:, tg.dynamic_cols] += step
    return {"before": gaps[0], "after": gaps[-1]}


def _rates(
    gen: Generator, tg: Targets, patients: int, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expected static rates (K,), step rates (T, J) and which steps were reached (T,)."""
    with torch.no_grad():
        p = draw(gen, patients, rng)
    live = live_mask(p.lengths, p.dynamic_probs.shape[1]).to(p.dynamic_probs)  # (B, T)
    count = live.sum(0)  # (T,)
    probs = p.dynamic_probs[..., tg.dynamic_cols] * live[..., None]  # (B, T, J)
    step_rates = probs.sum(0) / count.clamp_min(1)[:, None]
    return p.static_probs[:, tg.static_cols].mean(0), step_rates, count > 0


def _log_ratio(target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    return target.clamp_min(RATE_FLOOR).log() - current.clamp_min(RATE_FLOOR).log()
