"""Side-by-side benchmark of healthgym against peer generators of longitudinal records
(issue 9): MOSTLY AI's TabularARGN, Gretel's DGAN, SDV's PAR, healthgym's HealthGymV1 and
HealthGym, trained on the same real cohort under the same wall-clock budget, sampled to the
training-set size, scored with `healthgym.evaluate` against a real holdout.

Run from the benchmark environment (`.venv-bench`, see docs/benchmarks.md):

    python -m benchmarks.peers [--minutes 8] [--models healthgym,healthgym-v1,...]
                               [--cohort demo|varlen] [--threads 1]

One module per model (`tabularargn.py`, `dgan.py`, `par.py`, `healthgym_models.py`), each an
`Adapter` with `fit(train, minutes)` and `sample(n) -> Cohort`; `harness.py` runs each model
in its own process and builds the table; `common.py` converts cohorts to and from the peers'
tables.
"""
