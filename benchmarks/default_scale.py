"""The default model at scale: sampling throughput to Parquet parts, and data-parallel training
throughput and peak memory per process on large synthetic cohorts.

    python -m benchmarks.default_scale [--patients 100000,1000000] [--procs 1,2]
        [--steps 30] [--sample 10000000] [--stream] [--no-record]

The input cohorts are sampled from a default model trained briefly on the demo cohort (the
sampling is the sampling benchmark: `healthgym.sampling.write_parts`). Training: every
process reads the Parquet folder, fits the tokenizer, and trains `--steps` optimizer steps
with DDP over Gloo; throughput = patient-steps per second of the
global batches (median step time), peak RSS per process from getrusage. `--stream` trains on
the folder of parts as `healthgym train OUT/ --schema S --stream` does:
the tokenizer fitted in one pass on rank 0, each process tokenizing only its own patients.
`--quick` runs tiny sizes (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import header, machine, publish, table

SECTION = "## The default model at scale (issue 19)"


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", default="100000,1000000", help="training cohort sizes")
    p.add_argument("--procs", default="1,2", help="training processes")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps timed per run")
    p.add_argument("--sample", type=int, default=10_000_000, help="patients sampled to parts")
    p.add_argument("--sample-procs", type=int, default=2, help="processes writing the parts")
    p.add_argument(
        "--stream",
        action="store_true",
        help="train from the Parquet parts read chunk by chunk (`--stream`), not in memory",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (tests)")
    p.add_argument("--no-record", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.quick:
        args.patients, args.procs, args.steps, args.sample = "600", "1,2", 4, 2000
    import healthgym as hg
    from healthgym.sampling import CHUNK, part_name, write_parts

    info = machine()
    work = Path(tempfile.mkdtemp(prefix="hg-scale-"))
    demo = hg.datasets.demo()
    hg.HealthGym().fit(demo, work / "run", max_minutes=0.5 if args.quick else 2, progress=False)
    sizes = [int(x) for x in args.patients.split(",")]
    rows_sample, rows_train = [], []
    t0 = time.perf_counter()
    write_parts(work / "run", args.sample, work / "sampled", seed=0, nproc=args.sample_procs)
    seconds = time.perf_counter() - t0
    rows_sample.append({"patients": args.sample, "processes": args.sample_procs,
                        "seconds": seconds, "patients/s": args.sample / seconds})  # fmt: skip
    for n in sizes:
        cohort_dir = work / f"cohort-{n}"
        if n == args.sample:  # the sampled patients serve as this cohort
            cohort_dir = work / "sampled"
        elif n < args.sample and n % CHUNK == 0:  # their first parts (links, not copies)
            cohort_dir.mkdir()
            for k in range(n // CHUNK):
                os.link(work / "sampled" / part_name(k), cohort_dir / part_name(k))
        else:
            write_parts(work / "run", n, cohort_dir, seed=1, nproc=args.sample_procs)
        for procs in (int(x) for x in args.procs.split(",")):
            out = work / f"t-{n}-{procs}"
            result = _train(work / "run", cohort_dir, procs, args.steps, out, args.stream)
            rows_train.append({"patients": n, "processes": procs, **result})
    text = "\n".join(
        [
            header("Default model at scale", "benchmarks.default_scale", argv, info),
            "Sampling to Parquet part files (`healthgym sample RUN -n N -o OUT/ --nproc P`):",
            "",
            table(rows_sample),
            "",
            f"Data-parallel training, {args.steps} optimizer steps (DDP over Gloo on CPU; "
            "`batch`: the global batch), "
            + (
                "from the folder of parts read chunk by chunk (`--stream`: the tokenizer fitted in "
                "one pass on rank 0, each process tokenizing only its own patients; `tokens s`: "
                "both):"
                if args.stream
                else "every process holding the whole cohort's tokens:"
            ),
            "",
            table(rows_train),
        ]
    )
    return publish(text, args.no_record, SECTION)


def _train(
    run: Path, cohort_dir: Path, procs: int, steps: int, out: Path, stream: bool
) -> dict[str, Any]:
    from healthgym.training import distributed

    args = (str(run), str(cohort_dir), steps, str(out), stream)
    results = distributed.launch(_worker, args, procs)
    rss = [r["peak_rss_gib"] for r in results.values()]
    main = results[0]
    return {
        "batch": main["batch"],
        "load s": main["load_s"],
        "tokens s": main["tokens_s"],
        "set-up s": main["setup_s"],
        "step s (median)": main["step_s"],
        "patient-steps/s": main["patient_steps_s"],
        "peak RSS GiB per process": max(rss),
    }


def _worker(run: str, cohort_dir: str, steps: int, out: str, stream: bool) -> dict[str, Any]:
    """One training process: read, tokenize, train `steps` steps; timings and peak RSS.

    The folder of parts is read whole, in memory, or streamed (`stream`, as `--stream`)."""
    import pandas as pd
    import torch

    import healthgym as hg
    from healthgym.data.parquet_shards import ParquetShards
    from healthgym.models.healthgym.tokenizer import Tokenizer
    from healthgym.models.healthgym.trainer import HealthGymTrainer

    schema = hg.load(run).schema
    model = hg.HealthGym(epochs=1)
    if stream:
        t0 = time.perf_counter()
        shards = ParquetShards(cohort_dir, schema)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with model._process_group() as ctx:  # the steps of `fit`, to stop after `steps`
            tok = model._fit_encoding(shards, ctx)
            trainer, data, options = model._trainer_and_data(shards, tok, ctx)
            tokens_s = time.perf_counter() - t0
            mean_len = float(shards.lengths.mean())
            t0 = time.perf_counter()
            _time_first_step(trainer)
            trainer.fit(*data, out, progress=False, stop_after_steps=steps, **options)
            fit_s = trainer.first_step_at - t0
    else:
        t0 = time.perf_counter()
        cohort = hg.Cohort(pd.read_parquet(cohort_dir), schema, strict=False)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tok = Tokenizer(schema, model.config.bins, model.config.fine).fit(cohort)
        t = tok.transform(cohort, seed=0)
        tokens_s = time.perf_counter() - t0
        data = [torch.from_numpy(a) for a in (t.static, t.dynamic, t.lengths)]
        mean_len = float(t.lengths.mean())
        del cohort
        trainer = HealthGymTrainer(tok, model.config)
        t0 = time.perf_counter()
        _time_first_step(trainer)
        trainer.fit(*data, out, progress=False, stop_after_steps=steps)
        fit_s = trainer.first_step_at - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if os.environ.get("RANK", "0") != "0":  # rank 0 alone wrote the metrics
        return {"peak_rss_gib": rss}
    rows = [json.loads(x) for x in Path(out, "metrics.jsonl").read_text().splitlines()]
    step_s = statistics.median(r["seconds"] for r in rows if "nll" in r)
    return {
        "batch": trainer.batch,
        "load_s": load_s,
        "tokens_s": tokens_s,
        # before the first step: reading, tokenizing, the heads' and the statics' pre-fit
        "setup_s": load_s + tokens_s + fit_s,
        "step_s": step_s,
        "patient_steps_s": trainer.batch * mean_len / step_s,
        "peak_rss_gib": rss,
    }


def _time_first_step(trainer: Any) -> None:
    """Note on `trainer.first_step_at` when its first optimizer step starts."""
    step = trainer.step

    def timed(batch: Any) -> Any:
        if not hasattr(trainer, "first_step_at"):
            trainer.first_step_at = time.perf_counter()
        return step(batch)

    trainer.step = timed


if __name__ == "__main__":
    main()
