"""The verbs of the bundled demo cohort (registered on the command by cli.py): `demo`, the
whole flow on it (train -> sample -> evaluate), and `demo-data`, the cohort and its schema
written out to try the other verbs on."""

from __future__ import annotations

import time
from pathlib import Path

import click

from .console import SEED, Minutes, fresh_folder, friendly_errors, output_path, report_lines


@click.command()
@click.option(
    "--out",
    "out_dir",
    default="healthgym-demo",
    show_default=True,
    type=click.Path(),
    help="Folder for the run and the synthetic cohort.",
)
@click.option("--minutes", type=Minutes(), default=3.0, show_default=True, help="Training budget.")
@click.option(
    "-n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Patients to draw."
)
@click.option("--seed", type=SEED, default=0, show_default=True)
@friendly_errors
def demo(out_dir: str, minutes: float, n: int, seed: int) -> None:
    """The whole flow on the bundled PhysioNet 2012 cohort: train -> sample -> evaluate."""
    began = time.monotonic()  # --minutes counts from here (reading the cohort included)
    from .datasets import demo as demo_cohort
    from .evaluation import evaluate
    from .models.registry import default_family
    from .training import run_folder

    out = fresh_folder(Path(out_dir))
    cohort = demo_cohort()
    train_set, holdout = cohort.split(holdout=0.2, seed=seed)
    train_set.to_csv(out / "real_train.csv")
    holdout.to_csv(out / "real_holdout.csv")
    model = default_family()(seed=seed)
    click.echo(f"demo cohort: {cohort}; training {model} for up to {minutes:g} min", err=True)
    model.fit(train_set, out / "run", max_minutes=minutes, budget_began=began)
    synth = model.sample(n, seed=seed)
    synth.to_csv(out / "synthetic.csv")
    report = evaluate(
        train_set,
        synth,
        holdout=holdout,
        outcome="in_hospital_death",
        seed=seed,
        learning_dynamics=out / "run" / run_folder.PLOT_FILE,
    )
    click.echo(report_lines(report, report.save(out / "report")))
    click.echo(
        f"\nrun folder:       {out / 'run'} (checkpoints, metrics.jsonl, learning_dynamics.png)"
        f"\nsynthetic cohort: {out / 'synthetic.csv'}"
        f"\nreal train/holdout: {out / 'real_train.csv'}, {out / 'real_holdout.csv'}"
    )


@click.command("demo-data")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(),
    help="OUT.csv or OUT.parquet; OUT.duckdb: the cohort as an OMOP CDM (healthgym cohort).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT and its schema if they exist.")
@friendly_errors
def demo_data(output: str, overwrite: bool) -> None:
    """Write the bundled demo cohort and its schema (OUT.schema.yaml) to try the other verbs;
    OUT.duckdb writes it as an OMOP CDM database to try `healthgym cohort` on."""
    from .data.cohort import table_format
    from .datasets import demo as demo_cohort

    if output.endswith(".duckdb"):
        from .sources.demo_cdm import write_demo_cdm

        path = write_demo_cdm(output_path(output, overwrite))
        click.echo(
            f"wrote the demo cohort as an OMOP CDM to {path}; try: healthgym cohort --example "
            f"omop-icu-demo > icu.yaml && healthgym cohort icu.yaml --db duckdb:///{path} "
            "-o demo.parquet"
        )
        return
    table_format(output, write=True)  # the extension first: it names the schema file
    path = output_path(output, overwrite)
    schema_path = path.with_name(path.stem + ".schema.yaml")  # patients.v2.schema.yaml
    output_path(str(schema_path), overwrite)
    cohort = demo_cohort()
    path = cohort.to_file(output)
    cohort.schema.to_yaml(schema_path)
    click.echo(f"wrote {cohort} to {path} and its schema to {schema_path}")
