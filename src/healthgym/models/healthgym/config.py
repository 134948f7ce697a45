"""Settings of the default model's likelihood training; defaults measured on the demo cohort.

How they were chosen: docs/models/healthgym.md and `benchmarks/peers`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...extras import require
from ...training.seeding import check_seed
from ..config import ConfigBase

#: The largest vocabulary of one token (a real's bins, or its fine sub-bins): a run folder
#: declaring more is refused, before anything is allocated.
MAX_TOKENS = 65_536

#: `dropout=None`: `DROPOUT`, or `SMALL_DROPOUT` on cohorts of fewer than `SMALL_BELOW`
#: patients (not in DP runs). With levels on 320 and 200 patients, dropout 0.2 let membership
#: inference reach 0.58 (variable-length); 0.5 kept it at 0.55 / 0.51 with the associations
#: (docs/models/healthgym.md, "Settings")
DROPOUT = 0.2
SMALL_DROPOUT = 0.5
SMALL_BELOW = 1000

ENDS = ("length", "drawn")  #: `end`'s choices

#: The differential-privacy settings; all None: training is not private.
DP_SETTINGS = ("dp_epsilon", "dp_delta", "dp_max_grad_norm", "dp_epochs", "dp_tokenizer_share")


@dataclass(frozen=True)
class HealthGymConfig(ConfigBase):
    """Everything that shapes a run of the default model; JSON round-trips via to_dict."""

    bins: int = 32  #: equal-probability bins per real variable (first token)
    fine: int = 32  #: sub-bins per bin (second token); 1 turns the second token off
    width: int = 64  #: embedding, GRU and MLP width
    #: dropout in the MLP blocks; None: by the cohort's size (`SMALL_BELOW`), decided when
    #: `fit` starts (model.json holds the decision)
    dropout: float | None = None
    #: patients per optimizer step (smaller on small cohorts: an epoch takes >= 20 steps)
    batch_size: int = 128
    lr: float = 3e-3  #: AdamW learning rate (halved when the validation loss stalls)
    weight_decay: float = 0.01  #: AdamW weight decay
    epochs: int = 400  #: most passes over the training patients
    #: epochs without a better validation loss before the learning rate is halved
    lr_patience: int = 3
    #: epochs without a better validation loss before training stops (the best weights are kept)
    patience: int = 8
    val_fraction: float = 0.1  #: patients held out to measure the validation loss
    seed: int = 0  #: seeds weights, the validation split, shuffles, masks and dropout
    device: str = "auto"  #: "auto" (cuda if available, else cpu), "cpu", "cuda", ...
    temperature: float = 1.0  #: sampling temperature of every softmax
    #: each column reads its variable's last observed value (carried over missing steps) and
    #: how long ago, and its head adds a learned kernel around that value and the patient's
    #: mean so far (`kernel.LastValue`, issue 15); False: the previous step's tokens, as run
    #: folders written before it (their model.json has no such key and loads with False)
    last_value: bool = True
    #: with `last_value`, the kernel also pulls each value, the first one too, towards the
    #: level that the rest of the patient predicts (statics, the other variables' values), a
    #: ridge regression fitted before training (`warm_start.fit_levels`); off in DP runs; False:
    #: as run folders written before it (no such key there)
    levels: bool = True
    #: decay of the moving average of the weights that each validation reads and the run
    #: keeps (`training.averaging`; a step's weights weigh 1 - average); 0: the weights as
    #: trained, as run folders written before it (their model.json has no such key)
    average: float = 0.97
    #: where a stay ends: "length", a static token drawn with the statics that every step
    #: reads (cohorts keep their lengths' distribution exactly); "drawn", each step draws
    #: whether the stay ends there given the history and the treatments, so death, discharge
    #: and the stay's length respond to treatment in the simulator (issue 28); None: "drawn"
    #: where the schema's rows block has last-only items or patterns (stays that end in an
    #: outcome row: its rate is kept closer, `benchmarks.row_kinds`), else "length"; decided
    #: by `fit`, model.json keeps it
    end: str | None = None
    #: the previous step's treatments (`role: action`) reach every column of the next step
    #: (and its end) directly, not only through the recurrent state: a next state that
    #: follows the treatment as the data say (issue 28); False: as run folders before it
    direct_treatments: bool = False
    #: with `end="drawn"`, the previous step's tokens reach the step's end and its every
    #: column directly, not only through the recurrent state: end hazards and outcome flags
    #: that turn sharply on the last state (issue 33, `benchmarks.row_kinds`); False: as run
    #: folders before it (their model.json has no such key)
    skip: bool = True
    max_loss: float = 1e6  #: a loss that is NaN, inf or larger stops the run
    #: --stream (a `ParquetShards` cohort): the binned reals' quantiles are fitted on this
    #: many patients, a seeded sample (all of them when the cohort has no more: then the
    #: tokenizer is the in-memory one); their ranges, values and decimals on every patient
    tokenizer_sample: int = 20_000
    # Differential privacy (`private.py`, docs/privacy.md): None = off (the run is not private).
    #: the (epsilon, delta) budget per patient; setting it trains with DP-SGD
    dp_epsilon: float | None = None
    #: delta of the guarantee, in (0, 1); None: 0.1 / N for N training patients (below 1/N)
    dp_delta: float | None = None
    #: per-patient gradient clipping norm of each part (statics, steps); None: 1.0
    dp_max_grad_norm: float | None = None
    #: passes over the patients the noise is calibrated for (at most `epochs`); None: 8
    dp_epochs: int | None = None
    #: share of epsilon the tokenizer's histograms cost on their own, in (0, 1); None: 0.3
    dp_tokenizer_share: float | None = None

    def __post_init__(self) -> None:
        positive = (
            "bins", "fine", "width", "batch_size", "lr", "epochs", "lr_patience", "patience",
            "temperature", "max_loss", "tokenizer_sample",
        )  # fmt: skip
        self.check_positive(*positive)
        if not 2 <= self.bins < MAX_TOKENS or self.fine > MAX_TOKENS:
            raise ValueError(f"bins must be 2 to {MAX_TOKENS - 1} and fine at most {MAX_TOKENS}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.average < 1:
            raise ValueError(f"average must be in [0, 1), got {self.average}")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.end is not None and self.end not in ENDS:
            raise ValueError(f"end must be one of {', '.join(ENDS)}, got {self.end!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        check_seed(self.seed)
        if any(getattr(self, k) is not None for k in DP_SETTINGS):
            check_private(self)


def check_private(cfg: HealthGymConfig) -> None:
    """ValueErrors for differential-privacy settings out of range."""
    require("dp", "training with differential privacy")
    eps, delta = cfg.dp_epsilon, cfg.dp_delta
    if eps is None:
        given = [k for k in DP_SETTINGS if getattr(cfg, k) is not None]
        raise ValueError(f"{', '.join(given)} needs dp_epsilon (the privacy budget)")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"dp_epsilon must be a number > 0, got {eps}")
    if delta is not None and not 0 < delta < 1:
        raise ValueError(f"dp_delta must be in (0, 1), got {delta}")
    norm = cfg.dp_max_grad_norm
    if norm is not None and not (math.isfinite(norm) and norm > 0):
        raise ValueError(f"dp_max_grad_norm must be > 0, got {norm}")
    if cfg.dp_epochs is not None and cfg.dp_epochs < 1:
        raise ValueError(f"dp_epochs must be >= 1, got {cfg.dp_epochs}")
    share = cfg.dp_tokenizer_share
    if share is not None and not 0 < share < 1:
        raise ValueError(f"dp_tokenizer_share must be in (0, 1), got {share}")
