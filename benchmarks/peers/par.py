"""SDV's PARSynthesizer (`sdv`, the PAR model of `deepecho`): one long table, the patient id
as `sequence_key`, the static variables as `context_columns` (modelled by its context
synthesizer, a Gaussian copula), the dynamic variables as the sequence; the row order within
a patient is the time order (no `sequence_index`: steps are 0, 1, ...), and the sequence
length is sampled by the model (its end token).

Data as the library takes it: reals as `numerical` with NaN (its transformers fill them and
generate missingness at the real rate), binary/categorical variables as `categorical`
strings with NaN for missing. Library defaults otherwise (`enforce_min_max_values`,
`enforce_rounding`, `sample_size=1`), `cuda=False`, `verbose=False`.

Budget: PAR has no time limit; its epoch loop (`deepecho.models.par.PARModel.fit_sequences`,
one full-batch Adam step per epoch at a fixed learning rate, nothing scheduled on the epoch
count) iterates over `tqdm(range(epochs))`. During `fit`, that module's `tqdm` is replaced by
an iterator that stops yielding epochs when the budget runs out (restored afterwards; the
rule is in `_UntilDeadline`), and `epochs` is raised: the same as choosing the epochs that
fit, without a probe run. The epochs done are counted from the model's `loss_values`. On the
demo cohort (3,200 patients) one epoch takes about 40 s on one thread, and SDV's
preprocessing and sequence assembly about 45 s.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from healthgym import Cohort

from .common import Adapter, Budget, Fill, peer_tables, to_cohort

EPOCHS = 10**6
TABLE = "cohort"


class _UntilDeadline:
    """Stands in for deepecho's tqdm progress bar: yields epochs while the budget lasts.

    The first epoch always runs; another starts only if, taking as long as the last one, it
    would end nearer the deadline than stopping now does (one epoch on the demo cohort takes
    ~40 s on one thread, so "stop at the first check past the deadline" would overrun by up
    to an epoch).
    """

    budget: Budget | None = None

    def __init__(self, iterable: Any, *args: Any, **kwargs: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        budget, last = self.budget, None
        for item in self.iterable:
            now = time.monotonic()
            if budget is not None and last is not None:
                if budget.elapsed() + (now - last) / 2 >= budget.seconds:
                    return
            last = now
            yield item

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextlib.contextmanager
def epochs_until(budget: Budget) -> Iterator[None]:
    import deepecho.models.par as deepecho_par

    original = deepecho_par.tqdm
    clock = type("Clock", (_UntilDeadline,), {"budget": budget})
    deepecho_par.tqdm = clock
    try:
        yield
    finally:
        deepecho_par.tqdm = original


class PARAdapter(Adapter):
    def __init__(self, run_dir: str | Path | None = None, seed: int = 0) -> None:
        super().__init__(name="par", library="sdv")
        self.seed = seed
        self.settings = {"epochs": EPOCHS, "cuda": False}

    def fit(self, train: Cohort, minutes: float) -> PARAdapter:
        import numpy as np
        import torch
        from sdv.metadata import Metadata
        from sdv.sequential import PARSynthesizer

        budget = Budget(minutes)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        schema = train.schema
        self.schema, self.fill, self.key = schema, Fill.of(train), schema.id
        statics, dynamics = peer_tables(train)
        data = dynamics.merge(statics, on=self.key, how="left", sort=False)
        data = data[[self.key, *schema.names]]
        columns: dict[str, dict[str, str]] = {self.key: {"sdtype": "id"}}
        for v in schema.variables:
            columns[v.name] = {"sdtype": "numerical" if v.kind == "real" else "categorical"}
        metadata = Metadata.load_from_dict(
            {"tables": {TABLE: {"columns": columns, "sequence_key": self.key}}}
        )
        self.model = PARSynthesizer(
            metadata,
            context_columns=[v.name for v in schema.static],
            epochs=EPOCHS,
            cuda=False,
            verbose=False,
        )
        with epochs_until(budget):
            self.model.fit({TABLE: data})
        losses = getattr(self.model._model, "loss_values", None)
        done = 0 if losses is None else len(losses)
        self.progress = f"{done} epochs (full-batch steps)"
        return self

    def sample(self, n: int) -> Cohort:
        import numpy as np
        import torch

        torch.manual_seed(self.seed + 1)
        np.random.seed(self.seed + 1)
        out = self.model.sample_sequences(num_sequences=n)
        table = out[TABLE] if isinstance(out, dict) else out
        table = table.reset_index(drop=True)
        statics = table.groupby(self.key, sort=False)[[v.name for v in self.schema.static]].first()
        statics = statics.reset_index()
        dynamics = table[[self.key, *[v.name for v in self.schema.dynamic]]]
        return to_cohort(self.schema, statics, dynamics, self.fill, self.notes, self.key)
