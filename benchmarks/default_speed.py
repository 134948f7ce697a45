"""Speed of the default model (HealthGym) against its bounds: training, sampling, start-up.

    python -m benchmarks.default_speed [--quick] [--cohorts demo,icu] [--patients N]
                                       [--threads N] [--no-old] [--threads-study]
                                       [--study-only RUN] [--no-record]

Cohorts: ``demo``, the bundled cohort (4,000 stays x 12 steps, 16 variables, 22 dynamic
tokens), and ``icu``, the ICU shape of issue 18 (the demo cohort plus 8 derived dynamic
reals: 24 variables, 38 dynamic tokens; `benchmarks.cohorts.icu_cohort`). Each is split 80/20
(seed 0): the model trains on the 80% and the 20% scores it.

Per cohort, in fresh subprocesses (so each reports its own peak RSS), old and new at the
same pinned thread count (``--threads``, default 1: on a shared machine a second thread can
stall; the thread study below measures the policy):

- training: `HealthGym().fit` to its own early stop (the static model's pre-fit, then epochs;
  seconds per epoch = the median epoch's steps plus its validation, from metrics.jsonl), the
  best validation NLL, the holdout NLL (nats per patient) and the sample's KS and TV
  complements against the holdout;
- sampling in-process: ``model.sample(N, seed=0)`` on the trained run, patients per second,
  median of 3;
- sampling end to end: ``healthgym sample RUN -n N -o OUT.csv --seed 0`` timed from outside
  (interpreter start-up, imports, loading, sampling, writing);
- start-up: ``healthgym --help`` and ``healthgym sample RUN -n 1`` (median of 3).

Old vs new, in the same run: "old" is the implementation before issue 18 kept callable. The
sampler and the training loss of commit de4f823 (`benchmarks.reference_healthgym`, swapped in
by `legacy()`); for the CLI, a child that also imports, before the command, every module
0.1's eager ``import healthgym`` and ``healthgym.cli`` loaded (torch, the evaluation stack,
the datasets, every model family), which is what start-up cost then. Sampling ratios come
from one child that alternates old and new on the same trained model.

FLOP bound. Counted from the network's shapes, matmuls only (GELU, LayerNorm, softmax and
Adam left out), width W, dynamic vocabularies v_j (D columns), static v_s (S columns):

    step  = 12 W^2 (GRU) + sum_j (16 W^2 + 2 W v_j)    one patient-step, forward
    stat  = S * 16 W^2 + sum_s 2 W v_s                  drawing one patient's statics
    sample one patient of L steps = stat + L * step
    epoch = 3 * step * (training patient-steps) + step * (validation patient-steps)

(16 W^2: two residual blocks W -> 2W -> W; 2 W v_j: a head as one matrix; a backward costs
twice its forward.) The bound is that count at the machine's fp32 matmul peak (``torch.mm``
4096^2, best of 5, at the run's thread count, measured at the start); "% of bound" is
bound time / measured time. The static model's pre-fit is not in the epoch count, so the
time to early stop's share is a lower bound.

``--threads-study`` adds the thread-policy table: one training epoch and in-process sampling
at 1 and 2 threads, on the machine as it is and beside a process that keeps one core busy
(`benchmarks.common.busy_process`). ``--quick``: 60 patients of each cohort, width 16, at most
2 epochs, 50 sampled patients, two repeats; old training and the thread study skipped unless
asked; for the tests (seconds, not figures).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ROOT,
    busy_process,
    header,
    load,
    machine,
    matmul_peak,
    median,
    record,
    table,
)

SECTION = "## Speed of the default model (issue 18)"
QUICK = {"patients": 60, "width": 16, "epochs": 2, "sample": 50, "repeats": 2}

#: What `import healthgym.cli` loaded before issue 18 (0.1's eager imports), for "old" start-up.
OLD_IMPORTS = (
    "torch",
    "healthgym.data.cohort",
    "healthgym.datasets",
    "healthgym.datasets.healthgym_layouts",
    "healthgym.datasets.healthgym_published",
    "healthgym.models.encoding",
    "healthgym.evaluation",
    "healthgym.models",
    "healthgym.models.base",
    "healthgym.models.conditioning",
    "healthgym.data.parquet_shards",
    "healthgym.data.schema",
    "healthgym.training.distributed",
)

_CLI_CHILD = """
import importlib, json, sys
old = sys.argv[1] == "old"
if old:
    for name in {imports!r}:
        importlib.import_module(name)
    from benchmarks.reference_healthgym import legacy
    legacy(training=False).__enter__()
from healthgym.cli import main
try:
    main(sys.argv[2:], standalone_mode=False)
finally:
    hwm = [x for x in open("/proc/self/status") if x.startswith("VmHWM:")]
    print(json.dumps({{"peak_mib": int(hwm[0].split()[1]) / 1024}}), file=sys.stderr)
"""


# ---- what each cohort is ---------------------------------------------------------------------
def cohorts(name: str, quick: bool) -> tuple[Any, Any]:
    """(train, holdout) of a named cohort (80/20, seed 0)."""
    from benchmarks.cohorts import icu_cohort
    from healthgym.datasets import demo

    n = QUICK["patients"] if quick else None
    if name == "demo":
        cohort = demo()
        cohort = cohort if n is None else cohort.subset(cohort.ids[:n])
    elif name == "icu":
        cohort = icu_cohort(n)
    else:
        raise ValueError(f"unknown cohort {name!r}")
    return cohort.split(holdout=0.2, seed=0)


def settings(quick: bool) -> dict[str, Any]:
    """The model's settings: the defaults (--quick: tiny); the network and training the old
    code knows (`last_value` and `average`, where the model has them, off), so that old and
    new compare."""
    from healthgym.models.healthgym.config import HealthGymConfig

    out = {"width": QUICK["width"], "epochs": QUICK["epochs"]} if quick else {}
    later = {"last_value": False, "average": 0.0}
    return out | {k: v for k, v in later.items() if k in HealthGymConfig.__dataclass_fields__}


# ---- FLOP count ------------------------------------------------------------------------------
def flops(tokenizer: Any, width: int) -> dict[str, float]:
    """Matmul FLOPs of one patient-step (forward), of one patient's statics, per the module
    docstring."""
    w = width
    step = 12 * w * w + sum(16 * w * w + 2 * w * v for v in tokenizer.dynamic_vocab)
    stat = sum(16 * w * w + 2 * w * v for v in tokenizer.static_vocab)
    return {"step": float(step), "static": float(stat)}


def sample_flops(tokenizer: Any, width: int, mean_length: float) -> float:
    """FLOPs of sampling one patient of `mean_length` steps."""
    f = flops(tokenizer, width)
    return f["static"] + mean_length * f["step"]


def epoch_flops(tokenizer: Any, width: int, train_steps: int, val_steps: int) -> float:
    """FLOPs of one epoch: forward + backward over the training patient-steps, forward over
    the validation ones."""
    return flops(tokenizer, width)["step"] * (3 * train_steps + val_steps)


# ---- children (each a fresh process) ---------------------------------------------------------
def child_fit(spec: dict[str, Any]) -> dict[str, Any]:
    """Train to early stop into spec["run"]; seconds, epochs, losses, quality, peak RSS."""
    import numpy as np
    import torch

    import healthgym as hg
    from benchmarks.reference_healthgym import legacy, sequence_nll
    from healthgym.evaluation.marginals import marginal_metrics
    from healthgym.models.healthgym import trainer as trainer_module
    from healthgym.models.healthgym.trainer import split_patients
    from healthgym.training.runtime import resolve_threads

    train, holdout = cohorts(spec["cohort"], spec["quick"])
    model = hg.HealthGym(**settings(spec["quick"]))
    prefit: list[float] = []
    start = trainer_module.HealthGymTrainer.start

    def timed_start(self: Any) -> None:
        t0 = time.perf_counter()
        start(self)
        prefit.append(time.perf_counter() - t0)

    trainer_module.HealthGymTrainer.start = timed_start
    try:
        with legacy(sampling=False) if spec["old"] else contextlib.nullcontext():
            t0 = time.perf_counter()
            model.fit(train, spec["run"], progress=False)
            seconds = time.perf_counter() - t0
    finally:
        trainer_module.HealthGymTrainer.start = start
    rows = [json.loads(line) for line in (Path(spec["run"]) / "metrics.jsonl").open()]
    per_epoch: dict[int, float] = {}
    for r in rows:  # a step row counts in its epoch; an end-of-epoch row in the one it ended
        e = r["epoch"] - 1 if "val_nll" in r else r["epoch"]
        per_epoch[e] = per_epoch.get(e, 0.0) + r["seconds"]
    tokenizer = model.tokenizer
    tokens = tokenizer.transform(holdout, seed=0)
    with torch.no_grad():
        model.network.eval()
        held = sequence_nll(  # the same function as today's loss (checked in the tests)
            model.network.sequence, *(torch.from_numpy(a) for a in tokens_of(tokens))
        )
    synth = model.sample(len(holdout.ids), seed=0)
    marg = marginal_metrics(holdout, synth)
    lengths = np.asarray(train.lengths)
    tr, va = split_patients(len(lengths), model.config)
    return {
        "seconds": seconds,
        "prefit_s": prefit[0] if prefit else float("nan"),
        "epochs": model.result.epochs,
        "steps": model.result.steps,
        "epoch_s": median(list(per_epoch.values())),
        "best_val_nll": model.best_val_nll,
        "holdout_nll": float(held.mean()),
        "ks": marg["ks_complement_mean"],
        "tv": marg["tv_complement_mean"],
        "train_steps": int(lengths[tr].sum()),
        "val_steps": int(lengths[va].sum()),
        "threads": resolve_threads(),
        "peak_mib": _peak_mib(),
    }


def tokens_of(tokens: Any) -> tuple[Any, Any, Any]:
    return tokens.static, tokens.dynamic, tokens.lengths


def child_sample(spec: dict[str, Any]) -> dict[str, Any]:
    """Patients per second of ``model.sample(n, seed=0)``, old and new alternating."""
    import healthgym as hg
    from benchmarks.reference_healthgym import legacy
    from healthgym.training.runtime import resolve_threads

    model = hg.load(spec["run"])
    n, repeats = spec["n"], spec["repeats"]
    model.sample(min(n, 64), seed=1)  # warm up
    times: dict[str, list[float]] = {"new": [], "old": []}
    length = 0.0
    for _ in range(repeats):
        for which in ("old", "new") if spec["old"] else ("new",):
            with legacy(training=False) if which == "old" else contextlib.nullcontext():
                t0 = time.perf_counter()
                synth = model.sample(n, seed=0)
                times[which].append(time.perf_counter() - t0)
            length = float(synth.lengths.mean())
    return {
        "new": median(times["new"]),
        "old": median(times["old"]) if times["old"] else float("nan"),
        "mean_length": length,
        "threads": resolve_threads(),
        "peak_mib": _peak_mib(),
    }


def _peak_mib() -> float:
    """This process's peak resident memory: VmHWM, of its own image (ru_maxrss would keep
    the forking parent's, which Linux carries across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CHILDREN = {"fit": child_fit, "sample": child_sample}


def spawn(task: str, spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child task in a fresh interpreter (--quick: in this one); its JSON result."""
    if spec.get("quick") and not (env or {}).get("OMP_WAIT_POLICY"):
        saved = {k: os.environ.get(k) for k in env or {}}
        os.environ.update(env or {})
        try:
            return CHILDREN[task](spec)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    cmd = [sys.executable, "-m", "benchmarks.default_speed", "--child", task, json.dumps(spec)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    if proc.returncode:
        raise RuntimeError(f"child {task} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli(which: str, args: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds (timed from outside) and peak RSS of one `healthgym` command."""
    code = _CLI_CHILD.format(imports=OLD_IMPORTS)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, which, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"healthgym {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return {"seconds": seconds, **json.loads(proc.stderr.strip().splitlines()[-1])}


def cli_median(
    which: str, args: list[str], repeats: int, env: dict[str, str] | None = None
) -> dict[str, float]:
    """Median wall seconds of `repeats` runs (each writes anew: the output is removed)."""
    out = Path(args[args.index("-o") + 1]) if "-o" in args else None
    runs = []
    for _ in range(repeats):
        runs.append(cli(which, args, env))
        if out is not None:
            out.unlink(missing_ok=True)
    return {"seconds": median([r["seconds"] for r in runs]), "peak_mib": runs[0]["peak_mib"]}


# ---- the benchmark ---------------------------------------------------------------------------
def run_cohort(
    name: str, tmp: Path, quick: bool, n: int, old: bool, repeats: int, peak: float, threads: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of the cohort's table (old, new, ratio) and what the start-up rows need; every
    child runs at `threads` torch threads (HEALTHGYM_THREADS), old and new alike."""
    env = {"HEALTHGYM_THREADS": threads}
    from healthgym.models.healthgym.tokenizer import Tokenizer

    runs = {"new": tmp / f"{name}-new"}
    fits = {}
    for which in ("old", "new") if old else ("new",):
        runs[which] = tmp / f"{name}-{which}"
        spec = {"cohort": name, "quick": quick, "old": which == "old", "run": str(runs[which])}
        fits[which] = spawn("fit", spec, env)
    spec = {"run": str(runs["new"]), "n": n, "repeats": repeats, "old": True, "quick": quick}
    samp = spawn("sample", spec, env)
    out = str(tmp / f"{name}.csv")
    args = ["sample", str(runs["new"]), "-n", str(n), "-o", out, "--seed", "0"]
    versions = ("new",) if quick else ("old", "new")
    nan = {"seconds": float("nan"), "peak_mib": float("nan")}
    clis = {which: cli_median(which, args, repeats, env) if which in versions else nan
            for which in ("old", "new")}  # fmt: skip

    tokenizer = Tokenizer.load(runs["new"] / "tokenizer.json")
    width = json.loads((runs["new"] / "model.json").read_text())["config"]["width"]
    f = fits["new"]
    per_epoch = epoch_flops(tokenizer, width, f["train_steps"], f["val_steps"])
    per_patient = sample_flops(tokenizer, width, samp["mean_length"])
    bound = {
        "epoch": per_epoch / (peak * 1e9),
        "fit": per_epoch * f["epochs"] / (peak * 1e9),
        "sample": per_patient / (peak * 1e9),
    }

    def row(what: str, unit: str, old_v: float, new_v: float, bound_v: float | None) -> dict:
        better = old_v / new_v if unit.startswith("s") else new_v / old_v
        share = "" if bound_v is None else f"{100 * bound_v:.0f}%"
        return {
            "cohort": name,
            "figure": what,
            "unit": unit,
            "old": old_v,
            "new": new_v,
            "new / old": f"{better:.2f}x" if old_v == old_v else "",
            "new: % of FLOP bound": share,
        }

    nan = float("nan")
    fo = fits.get("old", {})
    rows = [
        row("training: one epoch", "s", fo.get("epoch_s", nan), f["epoch_s"],
            bound["epoch"] / f["epoch_s"]),
        row("training: to early stop", "s", fo.get("seconds", nan), f["seconds"],
            bound["fit"] / f["seconds"]),
        row("  epochs to early stop", "epochs", fo.get("epochs", nan), f["epochs"], None),
        row("  torch threads", "", fo.get("threads", nan), f["threads"], None),
        row("  static pre-fit", "s", fo.get("prefit_s", nan), f["prefit_s"], None),
        row("  best validation NLL", "nats/patient", fo.get("best_val_nll", nan),
            f["best_val_nll"], None),
        row("  holdout NLL", "nats/patient", fo.get("holdout_nll", nan), f["holdout_nll"], None),
        row("  KS complement vs holdout", "(+)", fo.get("ks", nan), f["ks"], None),
        row("  TV complement vs holdout", "(+)", fo.get("tv", nan), f["tv"], None),
        row("  peak RSS, fit", "MiB", fo.get("peak_mib", nan), f["peak_mib"], None),
        row(f"sampling in-process ({n} patients)", "patients/s", n / samp["old"],
            n / samp["new"], bound["sample"] * n / samp["new"]),
        row(f"sampling via CLI ({n} patients, end to end)", "patients/s",
            n / clis["old"]["seconds"], n / clis["new"]["seconds"],
            bound["sample"] * n / clis["new"]["seconds"]),
        row("  peak RSS, CLI sampling", "MiB", clis["old"]["peak_mib"], clis["new"]["peak_mib"],
            None),
    ]  # fmt: skip
    for r in rows:
        if r["unit"] != "s" and r["figure"].startswith("  ") or not r["unit"]:
            r["new / old"] = ""
    info = {
        "run": runs["new"],
        "threads": f["threads"],
        "sample_threads": samp["threads"],
        "flops_epoch": per_epoch,
        "flops_patient": per_patient,
    }
    return rows, info


def startup_rows(run: Path, tmp: Path, repeats: int, quick: bool) -> list[dict[str, Any]]:
    """`healthgym --help` and `healthgym sample RUN -n 1`, old and new (--quick: --help, new)."""
    out = str(tmp / "one.csv")
    rows = []
    commands = [("healthgym --help", ["--help"])]
    if not quick:
        sample = ["sample", str(run), "-n", "1", "-o", out, "--seed", "0"]
        commands.append(("healthgym sample RUN -n 1", sample))
    for what, args in commands:
        new = cli_median("new", args, repeats)
        old = new if quick else cli_median("old", args, repeats)
        rows.append(
            {
                "command": what,
                "old s": old["seconds"],
                "new s": new["seconds"],
                "new / old": f"{old['seconds'] / new['seconds']:.2f}x",
                "new peak RSS MiB": new["peak_mib"],
            }
        )
    return rows


#: Thread settings the study compares: (label, environment of the child process).
THREAD_SETTINGS = (
    ("1 thread", {"HEALTHGYM_THREADS": "1"}),
    ("2 threads", {"HEALTHGYM_THREADS": "2"}),
    (
        "2 threads, OMP_WAIT_POLICY=PASSIVE",
        {"HEALTHGYM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    ),
    ('"auto" (the default: the idle cores)', {"HEALTHGYM_THREADS": "auto"}),
)


def threads_study(run: Path, n: int, quick: bool) -> list[dict[str, Any]]:
    """Training steps and sampling at each of THREAD_SETTINGS, on the machine as it is and
    beside a process that keeps one core busy; each in a fresh process (OpenMP reads its
    wait policy when torch loads)."""
    rows = []
    for loaded in (False, True):
        for label, env in THREAD_SETTINGS:
            with busy_process(on=loaded):
                s = spawn("sample", {"run": str(run), "n": n, "repeats": 1, "old": False}, env)
                e = spawn("steps", {"cohort": "demo", "quick": quick}, env)
            rows.append(
                {
                    "machine": "+ one busy process" if loaded else "as it is",
                    "setting": label,
                    "threads (sampling, training)": f"{s['threads']}, {e['threads']}",
                    "sampling patients/s": n / s["new"],
                    "training s/step": e["step_s"],
                    "load at end": load(),
                }
            )
    return rows


def child_steps(spec: dict[str, Any]) -> dict[str, Any]:
    """Median seconds of a training step (batch 128) on the demo cohort, after 2 warm-ups."""
    import torch

    from healthgym.models.healthgym.config import HealthGymConfig
    from healthgym.models.healthgym.tokenizer import Tokenizer
    from healthgym.models.healthgym.trainer import HealthGymTrainer
    from healthgym.training.runtime import cpu_threads, resolve_threads

    train, _ = cohorts(spec["cohort"], spec["quick"])
    cfg = HealthGymConfig(**settings(spec["quick"]))
    tok = Tokenizer(train.schema, cfg.bins, cfg.fine).fit(train)
    t = tok.transform(train, seed=0)
    trainer = HealthGymTrainer(tok, cfg)
    trainer.prepare(*(torch.from_numpy(a) for a in tokens_of(t)))
    batches = trainer.epoch_batches(0)[: 4 if spec["quick"] else 10]
    times = []
    with cpu_threads(resolve_threads()):
        for batch in batches:
            t0 = time.perf_counter()
            trainer.step(batch)
            times.append(time.perf_counter() - t0)
    return {"step_s": median(times[2:]), "threads": resolve_threads()}


CHILDREN["steps"] = child_steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.default_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    p.add_argument("--cohorts", default=None, help="demo,icu (quick: demo)")
    p.add_argument("--patients", type=int, help="patients to sample (default: 4000; quick 50)")
    p.add_argument("--threads", default="1", help="torch threads of old and new (default 1)")
    p.add_argument("--no-old", action="store_true", help="skip training the old implementation")
    p.add_argument("--old", action="store_true", help="train the old implementation in --quick")
    p.add_argument("--threads-study", action="store_true", help="quiet vs loaded, 1 vs 2 threads")
    p.add_argument("--no-record", action="store_true", help="do not append to BENCHMARKS.md")
    p.add_argument("--study-only", metavar="RUN", help="only the thread study, on this run folder")
    p.add_argument("--child", nargs=2, metavar=("TASK", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return
    quick = args.quick
    if args.study_only:
        n = args.patients or 1024
        print(f"load {load()}")
        print(table(threads_study(Path(args.study_only), n, quick)))
        return
    names = (args.cohorts or ("demo" if quick else "demo,icu")).split(",")
    n = args.patients or (QUICK["sample"] if quick else 4000)
    repeats = QUICK["repeats"] if quick else 3
    old = (not args.no_old) and (args.old or not quick)
    info = machine()
    import torch

    from healthgym.training.runtime import resolve_threads

    threads = resolve_threads(args.threads)
    peak = matmul_peak(threads, 256 if quick else 4096)
    texts, first_run = [], None
    with tempfile.TemporaryDirectory(prefix="hg-speed-") as tmp_name:
        tmp = Path(tmp_name)
        all_rows, notes = [], []
        for name in names:
            rows, extra = run_cohort(name, tmp, quick, n, old, repeats, peak, str(threads))
            all_rows += rows
            first_run = first_run or extra["run"]
            notes.append(
                f"{name}: {extra['flops_epoch'] / 1e9:.1f} GFLOP per epoch, "
                f"{extra['flops_patient'] / 1e6:.1f} MFLOP per sampled patient; "
                f"threads: fit {extra['threads']}, sampling {extra['sample_threads']}"
            )
        start = startup_rows(first_run, tmp, repeats, quick)
        study = threads_study(first_run, n, quick) if args.threads_study else None
    peak_end = matmul_peak(threads, 256 if quick else 4096)
    texts = [
        header("HealthGym speed: old (before issue 18) vs new", "benchmarks.default_speed",
               argv, info),
        f"torch threads: {threads} for old and new (`--threads`; start-up rows: the library's "
        f"policy); fp32 matmul peak at that count {peak:.0f} GFLOP/s at the start, "
        f"{peak_end:.0f} at the end, the FLOP bound's rate; "
        f"load average at the end {load()}. Old = the code of commit de4f823 kept callable "
        "(`benchmarks/reference_healthgym.py`), measured in this run.\n",
        table(all_rows),
        "\n" + "; ".join(notes) + ".\n",
        "Start-up (wall, from outside, median):\n",
        table(start),
    ]  # fmt: skip
    if study is not None:
        texts += [
            "\nThreads (a fresh process per cell; training: median of 8 steps of 128 demo "
            f"patients; sampling: {n} patients of the first cohort's run):\n",
            table(study),
        ]
    text = "\n".join(texts)
    print(text)
    del torch
    if not args.no_record:
        record(text, section=SECTION)


if __name__ == "__main__":
    main()
