import os

import numpy as np
import pandas as pd
import pytest
import torch

# The suite trains tiny networks: one thread is fastest, and two threads on a busy 2-core
# machine stall in OpenMP barriers (measured: 30 ms vs 3 s per training step). Pinned, not
# "auto", so results do not depend on the machine's load (tests of "auto" unset it).
torch.set_num_threads(1)
os.environ.setdefault("HEALTHGYM_THREADS", "1")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Each test starts at one thread, whatever the test before it left."""
    torch.set_num_threads(1)


def make_table(n_patients: int = 6, seed: int = 0, variable_length: bool = True) -> pd.DataFrame:
    """A small mixed-type long table: static sex/unit, dynamic skewed lab, vitals, GCS-like cat."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        length = int(rng.integers(2, 6)) if variable_length else 5
        sex, unit = rng.choice(["Female", "Male"]), rng.choice(["MICU", "SICU", "CCU"])
        age = float(np.round(rng.uniform(20, 90), 1))
        for t in range(length):
            rows.append(
                {
                    "pid": 100 + p,
                    "hour": t,
                    "sex": sex,
                    "unit": unit,
                    "age": age,
                    "hr": float(np.round(rng.normal(85, 15), 1)),
                    "lactate": float(rng.gamma(1.5, 1.2)) if rng.random() > 0.3 else np.nan,
                    "vent": int(rng.integers(0, 2)),
                    "gcs": int(rng.integers(3, 6)),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()
