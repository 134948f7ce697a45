"""The optional extras (`pip install 'healthgym[rl]'`, `[dp]`, `[db]`): what each brings, and one
clear error, before any work, where a verb or function needs one that is not installed."""

from __future__ import annotations

import importlib.util
import sys

#: The modules each extra installs that the package imports (d3rlpy, in `rl`, is for the
#: quick start and the tests only).
EXTRAS = {
    "rl": ("gymnasium", "minari"),
    "dp": ("opacus",),
    "db": ("duckdb",),
    "postgresql": ("psycopg",),
}


class MissingExtra(ImportError):
    """An optional extra this needs is not installed; the message names the pip command."""


def require(extra: str, what: str) -> None:
    """MissingExtra naming ``extra``'s pip command unless its modules are importable (found
    without importing them: a check costs nothing)."""
    missing = [m for m in EXTRAS[extra] if not _importable(m)]
    if missing:
        raise MissingExtra(
            f"{what} needs the '{extra}' extra: pip install 'healthgym[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None  # None: importing it fails
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
