"""Cohorts from clinical databases: a definition (YAML) run inside an OMOP CDM or MIMIC-IV
database (DuckDB or PostgreSQL), streamed to a long Parquet table with its schema.

`build_cohort(definition, db, out)` does it; `healthgym cohort DEF.yaml --db URL -o OUT` is
the command. docs/cohorts.md documents every field of a definition. The names below load
their modules when first used, so the command starts without them.
"""

from __future__ import annotations

import importlib
from importlib import resources
from typing import Any

#: The shipped definitions users adapt (`healthgym cohort --example NAME`).
EXAMPLES = ("omop-icu-demo", "mimic-iv-hypotension")

_LAZY = {
    "BuiltCohort": "build",
    "build_cohort": "build",
    "read_provenance": "build",
    "Definition": "definition",
    "parse_definition": "definition",
    "read_definition": "definition",
}
__all__ = ["EXAMPLES", "example_definition", *_LAZY]


def example_definition(name: str) -> str:
    """The YAML text of a shipped definition."""
    if name not in EXAMPLES:
        raise ValueError(f"no example definition {name!r}; there are {list(EXAMPLES)}")
    return resources.files(__package__).joinpath(f"definitions/{name}.yaml").read_text()


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
