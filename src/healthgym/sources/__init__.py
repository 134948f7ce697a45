"""Cohorts from clinical databases: a definition (YAML) run inside an OMOP CDM or MIMIC-IV
database (DuckDB or PostgreSQL), streamed to a long Parquet table with its schema.

`build_cohort(definition, db, out)` does it; `healthgym cohort DEF.yaml --db URL -o OUT` is
the command. docs/cohorts.md documents every field of a definition.
"""

from __future__ import annotations

from importlib import resources

from .build import BuiltCohort, build_cohort
from .definition import Definition, parse_definition, read_definition

__all__ = [
    "BuiltCohort",
    "Definition",
    "EXAMPLES",
    "build_cohort",
    "example_definition",
    "parse_definition",
    "read_definition",
]

#: The shipped definitions users adapt (`healthgym cohort --example NAME`).
EXAMPLES = ("omop-icu-demo", "mimic-iv-hypotension")


def example_definition(name: str) -> str:
    """The YAML text of a shipped definition."""
    if name not in EXAMPLES:
        raise ValueError(f"no example definition {name!r}; there are {list(EXAMPLES)}")
    return resources.files(__package__).joinpath(f"definitions/{name}.yaml").read_text()
