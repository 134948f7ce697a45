"""The `healthgym` command: one verb per step of the flow, each usable alone."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .console import (
    SEED,
    LazyChoice,
    Minutes,
    friendly_errors,
    load_cohort,
    naming_file,
    output_path,
    report_lines,
)
from .demo import demo, demo_data
from .extras import require
from .release.commands import manifest, release
from .rl.commands import export, ope
from .sources.commands import cohort

# Start-up: the command imports click and the standard library only; each verb imports what
# it needs (torch, pandas, the models, the evaluation stack) when it runs, so `healthgym
# --help` and a verb's --help answer at once (issue 18; tests/test_cli_startup.py).
if TYPE_CHECKING:
    from .data.cohort import Cohort
    from .data.parquet_shards import ParquetShards
    from .models.base import RunFolderModel


def write_tables(*args: Any, **kwargs: Any) -> Any:
    """`healthgym.data.cohort.write_tables`, imported when `sample` writes (pandas loads then)."""
    from .data.cohort import write_tables as write

    return write(*args, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="healthgym")
def main() -> None:
    """Train generative models on longitudinal patient records and release synthetic cohorts."""


@main.command()
@click.argument("data", type=click.Path())
@click.option("--id", "id_col", required=True, help="Patient id column.")
@click.option("--time", "time_col", required=True, help="Integer time-step column.")
@click.option(
    "--max-integer-levels",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Integer columns with at most this many values are categorical.",
)
@click.option("-o", "--output", type=click.Path(), help="Write the schema YAML here.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (a regular file).")
@friendly_errors
def schema(
    data: str,
    id_col: str,
    time_col: str,
    max_integer_levels: int,
    output: str | None,
    overwrite: bool,
) -> None:
    """Infer the schema of DATA (CSV or Parquet) and print or write it as YAML."""
    from .data.cohort import Cohort, read_table
    from .data.inference import infer_schema

    if output:
        output_path(output, overwrite)
    with naming_file(data):
        table = read_table(data)
        s = infer_schema(table, id_col, time_col, max_integer_levels=max_integer_levels)
        Cohort(table, s)  # the inferred schema must also validate the table
    text = s.to_yaml(output)
    if output:
        click.echo(f"wrote {output} ({len(s.variables)} variables)")
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("data", type=click.Path())
@click.option("--id", "id_col", help="Patient id column (not needed with --schema).")
@click.option("--time", "time_col", help="Integer time-step column (not needed with --schema).")
@click.option("--schema", "schema_file", type=click.Path(), help="Schema YAML (else inferred).")
@click.option(
    "--dataset",
    type=LazyChoice("healthgym.datasets.healthgym_layouts", "DATASETS"),
    help="DATA is this published Health Gym file (no --id/--time/--schema needed).",
)
@click.option(
    "--model",
    "model_name",
    type=LazyChoice("healthgym.models.registry", "MODELS"),
    help="Model family (`healthgym models` lists them) [default: the family whose preset is "
    "--preset or --dataset, else the default family].",
)
@click.option(
    "--preset",
    type=LazyChoice("healthgym.models.registry", "preset_names"),
    help="Named settings of a family (`healthgym models`) [default: the --dataset's preset].",
)
@click.option("--epochs", type=int, help="Passes over the curriculum (faithful: 100).")
@click.option("--batch-size", type=int, help="Real sequences per batch (faithful: 256).")
@click.option(
    "--max-minutes",
    type=Minutes(),
    help="Wall-time budget of the command, set-up included: training stops cleanly at the last "
    "step expected to end inside it (resume later; README: what --max-minutes covers).",
)
@click.option("--seed", type=SEED, help="Seed for weights, noise and shuffles.")
@click.option("--device", help="auto (default), cpu, cuda, cuda:1, ...")
@click.option(
    "--dp-epsilon",
    type=float,
    help="Train with differential privacy: epsilon of the per-patient guarantee (needs "
    "--schema and a family that trains privately; docs/privacy.md).",
)
@click.option(
    "--dp-delta", type=float, help="Delta of the guarantee, in (0, 1) [default: 0.1 / patients]."
)
@click.option("--out", "run_dir", required=True, type=click.Path(), help="Run folder.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Train with N processes on this machine (torch.distributed: one per GPU, or Gloo on "
    "CPU; families that distribute). Several machines: torchrun ... -m healthgym train ... "
    "(docs/distributed.md).",
)
@click.option(
    "--stream",
    is_flag=True,
    help="Train on a Parquet DATA with --schema without loading it whole: read it chunk by "
    "chunk; each process holds only its own patients (families that stream; "
    "docs/distributed.md).",
)
@friendly_errors
def train(
    data: str,
    id_col: str | None,
    time_col: str | None,
    schema_file: str | None,
    dataset: str | None,
    model_name: str | None,
    preset: str | None,
    max_minutes: float | None,
    run_dir: str,
    resume: bool,
    quiet: bool,
    nproc: int | None,
    stream: bool,
    **settings: Any,
) -> None:
    """Train a model (the default family unless --model or --preset say) on DATA (CSV or
    Parquet long table) into --out."""
    began = time.monotonic()  # --max-minutes counts from here: reading DATA is in the budget
    from .training.runtime import open_idle_window

    open_idle_window()  # the thread policy's reading spans reading DATA
    from .data.parquet_shards import ParquetShards
    from .datasets.healthgym_published import load_published
    from .models.config import resolve_device
    from .models.registry import check_capabilities, family_for, saved_run
    from .training import distributed

    if settings.get("device") is not None:
        resolve_device(settings["device"])  # a bad --device ends here, not after the data load
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise ValueError(f"--out {run_dir} is not a folder: name a new or existing run folder")
    saved = saved_run(Path(run_dir)) if resume else None  # --resume: the run's family
    family = family_for(model_name, preset, dataset, saved)
    private = settings.get("dp_epsilon") is not None or settings.get("dp_delta") is not None
    if private:
        require("dp", "--dp-epsilon (training with differential privacy)")
    check_capabilities(family, private, nproc, schema_file, stream)
    if stream and (dataset or not schema_file):
        raise ValueError("--stream reads DATA with --schema (not --dataset or --id/--time)")
    if (nproc or 1) > 1:
        if distributed.env_world_size() > 1:
            raise ValueError("--nproc inside a torchrun job: torchrun already starts the processes")
        if stream:  # a bad file ends here, in one line, not in every process
            ParquetShards(data, schema_file)
        # every option as given, for each process (which then trains in the torchrun group)
        params = {**click.get_current_context().params, "nproc": None}
        _launch_training(nproc, params)
        return
    if stream:
        cohort: Cohort | ParquetShards = ParquetShards(data, schema_file)
    elif dataset is None:
        cohort = load_cohort(data, id_col, time_col, schema_file)
    elif id_col or time_col or schema_file:
        raise ValueError("--dataset reads the published layout: drop --id, --time and --schema")
    else:
        cohort = load_published(dataset, data)
    overrides = {k: v for k, v in settings.items() if v is not None}
    if preset is None and dataset in family.presets:
        preset = dataset
    wanted = {**family.preset_settings(preset), **overrides}
    model: RunFolderModel
    if saved is not None and saved[0] is family:  # the run's settings, and those given
        model = family.from_meta(Path(run_dir), saved[1], **wanted)
    else:
        model = family(**wanted)
    main_process = distributed.is_main_process()  # in a torchrun job, rank 0 speaks
    if main_process:
        doing = "resuming" if saved is not None and saved[0] is type(model) else "training"
        click.echo(f"{cohort}\n{doing} {model} -> {run_dir}", err=True)
    model.fit(
        cohort,
        run_dir,
        resume=resume,
        max_minutes=max_minutes,
        progress=not quiet,
        budget_began=began,
    )
    r = model.result
    how = f"stopped early ({r.stopped_early})" if r.stopped_early else "finished"
    if main_process:
        click.echo(f"{how}: {r.epochs} epochs, {r.steps} {model.step_unit}; run folder {run_dir}")
        for line in model.result_lines():
            click.echo(line)


def _launch_training(nproc: int, params: dict[str, Any]) -> None:
    """`train` with these parameters in `nproc` processes (torchrun's launcher, standalone)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .training import distributed

    click.echo(f"starting {nproc} training processes", err=True)
    try:
        distributed.launch(_train_process, (params,), nproc)
    except ChildFailedError as e:
        ranks = ", ".join(str(r) for r in sorted(e.failures))
        raise ValueError(
            f"training process(es) {ranks} of {nproc} failed (messages above)"
        ) from None


def _train_process(params: dict[str, Any]) -> None:
    """One process of `train --nproc N` (module level, so the launcher can start it)."""
    train.callback(**params)


@main.command()
@click.argument("run_dir", type=click.Path())
@click.option("-n", "n", required=True, type=click.IntRange(min=1), help="Patients to generate.")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="OUT.csv or OUT.parquet; a folder (OUT/) gets Parquet part files.",
)
@click.option("--seed", type=SEED, help="Seed (default: fresh randomness).")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    help="Processes writing Parquet part files into the OUTPUT folder (the same patients for "
    "any number).",
)
@click.option(
    "--length",
    type=click.IntRange(min=1),
    help="Steps per patient [default: as the family draws them: per patient, or the longest].",
)
@click.option(
    "--condition",
    "conditions",
    multiple=True,
    metavar="COL=VALUE",
    help="Every patient gets this static value (repeatable; families that condition). VALUE is "
    "read "
    "as the variable's level or number; NA means missing.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "healthgym"]),
    default="table",
    show_default=True,
    help="healthgym: the published CSV layout and codes of the dataset the run was trained on.",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists (a regular file).")
@friendly_errors
def sample(
    run_dir: str,
    n: int,
    output: str,
    seed: int | None,
    length: int | None,
    conditions: tuple[str, ...],
    fmt: str,
    overwrite: bool,
    nproc: int | None,
) -> None:
    """Generate N synthetic patients from a trained run and stream them to OUTPUT."""
    from .training.runtime import open_idle_window

    open_idle_window()  # the thread policy's reading spans the imports and the model load
    if nproc or output.endswith(("/", os.sep)):
        _sample_parts(run_dir, n, output, seed, length, conditions, fmt, nproc or 1)
        return
    from . import load
    from .data.cohort import table_format
    from .datasets.healthgym_layouts import published_dataset
    from .datasets.healthgym_published import published_frames
    from .models.conditioning import parse_condition
    from .models.registry import families_that
    from .training.runtime import cpu_threads, resolve_threads

    output_path(output, overwrite)
    table_format(output, write=True)  # .csv or .parquet, checked before the model loads
    model = load(run_dir)
    if conditions:
        if not model.conditioning:
            raise ValueError(
                f"--condition needs a run of {' or '.join(families_that('conditioning'))}; "
                f"{run_dir} holds {model!r}"
            )
        wanted = dict(parse_condition(model.schema, c) for c in conditions)
        if len(wanted) < len(conditions):
            raise ValueError("--condition names a variable twice")
        batches = model.sample_batches(n, seed=seed, length=length, conditions=wanted)
    else:
        batches = model.sample_batches(n, seed=seed, length=length)
    schema = model.schema
    if fmt == "healthgym":
        if Path(output).suffix != ".csv":
            raise ValueError(f"--format healthgym writes a CSV file: name it OUT.csv, not {output}")
        batches = published_frames(batches, schema, published_dataset(schema))
    with cpu_threads(resolve_threads()):  # the thread policy of fit and sample(): sampling
        # happens as the file is written; an interrupted write leaves no file behind
        out = write_tables(batches, output, schema, fmt="csv" if fmt == "healthgym" else None)
    click.echo(f"wrote {n} patients ({out[1]} rows) to {out[0]}")


def _sample_parts(
    run_dir: str,
    n: int,
    output: str,
    seed: int | None,
    length: int | None,
    conditions: tuple[str, ...],
    fmt: str,
    nproc: int,
) -> None:
    """`sample` into a folder of Parquet part files (healthgym.sampling)."""
    from .sampling import write_parts
    from .training.seeding import fresh_seed

    if conditions or fmt != "table":
        raise ValueError("--condition and --format healthgym write one file: drop them or -o OUT/")
    if seed is None:
        seed = fresh_seed()
        click.echo(f"seed {seed} (give --seed {seed} to draw these patients again)", err=True)
    try:
        parts = write_parts(run_dir, n, output, seed=seed, nproc=nproc, length=length)
    except FileExistsError as e:
        raise ValueError(str(e)) from None
    click.echo(f"wrote {n} patients to {len(parts)} Parquet part files in {output}")


@main.command("evaluate")
@click.argument("real", type=click.Path())
@click.argument("synthetic", type=click.Path())
@click.option("--holdout", type=click.Path(), help="Real patients not used in training.")
@click.option("--outcome", help="Static binary variable for train-on-synthetic utility.")
@click.option("--schema", "schema_file", type=click.Path(), help="Schema YAML for all files.")
@click.option("--run", "run_dir", type=click.Path(), help="Run folder: its schema and plots.")
@click.option("--id", "id_col", help="Patient id column (to infer the schema from REAL).")
@click.option("--time", "time_col", help="Integer time-step column (to infer the schema).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Report folder.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it holds an earlier report.")
@friendly_errors
def evaluate_command(
    real: str,
    synthetic: str,
    holdout: str | None,
    outcome: str | None,
    schema_file: str | None,
    run_dir: str | None,
    id_col: str | None,
    time_col: str | None,
    out_dir: str,
    overwrite: bool,
) -> None:
    """Compare SYNTHETIC with REAL (CSV or Parquet): OUTPUT/index.html, metrics.json, PNGs."""
    from .data.atomic import write_folder_atomic
    from .evaluation import evaluate
    from .training import run_folder

    if schema_file and run_dir:
        raise ValueError("give --schema or --run, not both")
    out = output_path(out_dir, overwrite, folder=True)  # checked before the work, not after
    learning = None
    if run_dir is not None:
        schema_file = str(Path(run_dir) / run_folder.SCHEMA_FILE)
        if not Path(schema_file).exists():
            raise ValueError(f"{run_dir}: not a healthgym run folder (no {run_folder.SCHEMA_FILE})")
        learning = Path(run_dir) / run_folder.PLOT_FILE
    real_cohort = load_cohort(real, id_col, time_col, schema_file, role="real")
    schema = real_cohort.schema
    synth = load_cohort(synthetic, None, None, schema, strict=False, role="synthetic")
    held = load_cohort(holdout, None, None, schema, role="holdout") if holdout else None
    guarantee = None if run_dir is None else run_folder.read_privacy(run_dir)
    report = evaluate(
        real_cohort,
        synth,
        holdout=held,
        outcome=outcome,
        learning_dynamics=learning,
        guarantee=guarantee,
    )
    write_folder_atomic(out, report.save)  # replaces an earlier report whole: no stale files
    click.echo(report_lines(report, out / "index.html"))


@main.command("models")
@friendly_errors
def models_command() -> None:
    """List the model families, what each can do, and their presets."""
    from .models.registry import MODELS, default_family

    for name, cls in MODELS.items():
        can = [
            what
            for what, able in (
                ("streams (--stream)", cls.streaming()),
                ("distributes (--nproc)", cls.distributable()),
                ("private (--dp-epsilon)", cls.private),
                ("conditions (--condition)", cls.conditioning),
                ("keeps the schema's rows block", cls.keeps_rows),
            )
            if able
        ]
        default = " (default)" if cls is default_family() else ""
        click.echo(f"{name}{default}: {cls.summary}")
        click.echo(f"  {', '.join(can) or 'trains in one process, in memory'}")
        if cls.presets:
            click.echo(f"  presets: {', '.join(sorted(cls.presets))}")


main.add_command(export)  # the offline-RL export lives with the rest of rl/
main.add_command(ope)
main.add_command(cohort)  # cohorts from clinical databases live in sources/
main.add_command(release)  # the custodian's bundle lives in release/
main.add_command(manifest)
main.add_command(demo)
main.add_command(demo_data)

if __name__ == "__main__":
    main()
