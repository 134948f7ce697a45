"""`healthgym cohort`: a long table built inside a clinical database from a definition,
registered on the command by cli.py."""

from __future__ import annotations

import sys

import click

from ..console import LazyChoice, friendly_errors, output_path


@click.command("cohort")
@click.argument("definition", required=False, type=click.Path())
@click.option(
    "--db",
    help="duckdb:///FILE.duckdb, duckdb:///FOLDER (Parquet/CSV tables) or "
    "postgresql://USER@HOST/DB (read only).",
)
@click.option("-o", "--output", help="OUT.parquet; its schema goes to OUT.schema.yaml.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT and its schema if they exist.")
@click.option(
    "--example",
    type=LazyChoice("healthgym.sources", "EXAMPLES"),
    help="Print a shipped definition to adapt (docs/cohorts.md) and stop.",
)
@friendly_errors
def cohort(
    definition: str | None, db: str | None, output: str | None, overwrite: bool, example: str | None
) -> None:
    """Build a long table (one row per stay and step) from DEFINITION (YAML) in database DB."""
    from . import build_cohort, example_definition, read_definition

    if example is not None:
        click.echo(example_definition(example), nl=False)
        return
    if definition is None or db is None or output is None:
        raise ValueError("give DEFINITION, --db URL and -o OUT.parquet (or --example NAME)")
    parsed = read_definition(definition)  # before the database is opened
    if not output.endswith(".parquet"):
        raise ValueError(f"{output}: the cohort is written as Parquet; name it OUT.parquet")
    path = output_path(output, overwrite)
    output_path(str(path.with_name(path.stem + ".schema.yaml")), overwrite)
    from ..training.progress import interactive

    if interactive():  # a bar of rows written on a terminal; nothing in a log
        from tqdm.auto import tqdm

        with tqdm(unit=" rows", desc="cohort", file=sys.stderr) as bar:
            built = build_cohort(parsed, db, path, progress=bar.update)
    else:
        built = build_cohort(parsed, db, path)
    click.echo(
        f"wrote {built.stays} stays ({built.rows} rows, {len(built.schema.variables)} variables) "
        f"to {built.path} and its schema to {built.schema_path} in {built.seconds:.1f} s"
    )
