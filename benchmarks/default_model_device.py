"""The default model end to end on whatever device `device="auto"` picks (CUDA if present):
fit on the demo cohort (3,200 training patients, at most 1.5 minutes), resume the finished run,
sample as many patients, evaluate. Prints the summary; run `python -m
benchmarks.default_model_device` (on a GPU machine with the system python: `PYTHONPATH=src:.`).
"""

from __future__ import annotations

import tempfile
import time
import warnings

import torch

import healthgym as hg
from healthgym.datasets.demo_data import demo


def main() -> None:
    warnings.simplefilter("ignore")
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print("torch", torch.__version__, "device", name)
    train, hold = demo().split(0.2, seed=0)
    with tempfile.TemporaryDirectory() as run:
        model = hg.HealthGym()
        t = time.time()
        model.fit(train, run, max_minutes=1.5, progress=False)
        print("fit", round(time.time() - t, 1), "s", model.result)
        more = hg.HealthGym(epochs=model.result.epochs + 2)
        print("resumed:", more.fit(train, run, resume=True, progress=False).result)
    t = time.time()
    synth = model.sample(len(train), seed=0)
    print("sample", round(time.time() - t, 1), "s")
    report = hg.evaluate(train, synth, holdout=hold, outcome="in_hospital_death")
    print(report.summary[["key", "value"]].to_string())


if __name__ == "__main__":
    main()
