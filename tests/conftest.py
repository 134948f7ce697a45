import os

import pandas as pd
import pytest
import torch

from helpers import make_table

# The suite trains tiny networks: one thread is fastest, and two threads on a busy 2-core
# machine stall in OpenMP barriers (measured: 30 ms vs 3 s per training step). Pinned, not
# "auto", so results do not depend on the machine's load (tests of "auto" unset it).
torch.set_num_threads(1)
os.environ.setdefault("HEALTHGYM_THREADS", "1")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Each test starts at one thread, whatever the test before it left."""
    torch.set_num_threads(1)


@pytest.fixture
def table() -> pd.DataFrame:
    return make_table()
