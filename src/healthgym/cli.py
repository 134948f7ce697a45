"""The `healthgym` command: one verb per step of the flow, each usable alone."""

from __future__ import annotations

import functools
import sys
from typing import Any

import click

from .cohort import Cohort, read_table
from .schema import Schema, infer_schema


def friendly_errors(fn: Any) -> Any:
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="healthgym")
def main() -> None:
    """Train generative models on longitudinal patient records and release synthetic cohorts."""


def load_cohort(data: str, id: str | None, time: str | None, schema: str | None) -> Cohort:
    """A cohort from a file, with a schema file or one inferred from --id/--time."""
    if schema is not None:
        return Cohort(read_table(data), Schema.from_yaml(schema))
    if id is None or time is None:
        raise ValueError("give --id and --time (or --schema FILE)")
    return Cohort(read_table(data), id=id, time=time)


@main.command()
@click.argument("data", type=click.Path())
@click.option("--id", "id_col", required=True, help="Patient id column.")
@click.option("--time", "time_col", required=True, help="Integer time-step column.")
@click.option(
    "--max-integer-levels",
    default=10,
    show_default=True,
    help="Integer columns with at most this many values are categorical.",
)
@click.option("-o", "--output", type=click.Path(), help="Write the schema YAML here.")
@friendly_errors
def schema(
    data: str, id_col: str, time_col: str, max_integer_levels: int, output: str | None
) -> None:
    """Infer the schema of DATA (CSV or Parquet) and print or write it as YAML."""
    table = read_table(data)
    s = infer_schema(table, id_col, time_col, max_integer_levels=max_integer_levels)
    Cohort(table, s)  # the inferred schema must also validate the table
    text = s.to_yaml(output)
    if output:
        click.echo(f"wrote {output} ({len(s.variables)} variables)")
    else:
        click.echo(text, nl=False)


if __name__ == "__main__":
    main()
