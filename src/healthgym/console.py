"""What the command shows and checks around every verb: one-line errors and warnings, output
paths that never replace what a user did not ask to replace, cohorts read with the file named
in their errors, and choices read only when a verb needs them (a fast start-up)."""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .extras import MissingExtra

if TYPE_CHECKING:
    from .data.cohort import Cohort
    from .data.schema import Schema
    from .evaluation import Report


class LazyChoice(click.Choice):
    """A click.Choice whose choices are read from `module`.`name` (called, if a function)
    whenever needed (the verb's --help or its arguments), not when the command starts; a
    family added to the registry is a choice at once."""

    def __init__(self, module: str, name: str, order: Any = list) -> None:
        self._where, self._order = (module, name), order
        super().__init__(())

    @property
    def choices(self) -> Any:
        import importlib

        module, name = self._where
        value = getattr(importlib.import_module(module), name)
        return tuple(self._order(value() if callable(value) else value))

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ sets them; read lazily
        pass


#: The longest error or warning message the command prints (it names the file, the column
#: and a few values; anything longer is cut), so that a line with its "error: " or
#: "warning: " stays within 300 characters.
MAX_MESSAGE = 290

#: Every --seed: an integer from 0 to 2**63 - 1 (`healthgym.training.seeding.MAX_SEED`).
SEED = click.IntRange(0, 2**63 - 1)


class Minutes(click.ParamType):
    """A time budget in minutes: a finite number > 0 (0, negative and nan are refused)."""

    name = "minutes"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            minutes = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of minutes", param, ctx)
        if not 0 < minutes < float("inf"):
            self.fail(f"{value!r}: give a number of minutes > 0", param, ctx)
        return minutes


def friendly_errors(fn: Any) -> Any:
    """Bad input and every OS error (permission, a folder where a file was meant, disk full)
    end in one line on stderr and exit code 2, never a traceback; warnings are one line too."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():  # restores showwarning on the way out
            warnings.showwarning = show_warning
            try:
                return fn(*args, **kwargs)
            except (ValueError, OSError, MissingExtra) as e:
                click.echo(f"error: {one_line(e)}", err=True)
                sys.exit(2)

    return wrapper


def one_line(e: BaseException | str) -> str:
    """A message on one line of at most MAX_MESSAGE characters; an OSError as 'PATH: reason'."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        # a rename's target is the path the user named
        text = f"{e.filename if e.filename2 is None else e.filename2}: {e.strerror}"
    else:
        text = str(e) or type(e).__name__
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    click.echo(f"warning: {one_line(str(message))}", err=True)


def load_cohort(
    data: str,
    id: str | None,
    time: str | None,
    schema: str | Schema | None,
    *,
    strict: bool = True,
    role: str | None = None,
) -> Cohort:
    """A cohort from a file, with a schema (file) or one inferred from --id/--time; an error
    in the table names the file (and its ``role``: "real", "synthetic", ...)."""
    from .data.cohort import Cohort, read_table
    from .data.schema import Schema

    if schema is None and (id is None or time is None):
        raise ValueError("give --id and --time (or --schema FILE)")
    if schema is not None and not isinstance(schema, Schema):
        schema = Schema.from_yaml(schema)
    with naming_file(data, role):
        table = read_table(data)
        if schema is None:
            return Cohort(table, id=id, time=time)
        return Cohort(table, schema, strict=strict)


@contextlib.contextmanager
def naming_file(path: str | Path, role: str | None = None) -> Iterator[None]:
    """A ValueError raised inside starts with ``[role file] path:`` (once)."""
    try:
        yield
    except ValueError as e:
        text, prefix = str(e), f"{path}: "
        text = text[len(prefix) :] if text.startswith(prefix) else text
        raise ValueError(f"{role + ' file ' if role else ''}{path}: {text}") from None


def output_path(output: str, overwrite: bool, *, folder: bool = False) -> Path:
    """``output`` checked before anything is computed: an existing path only with
    ``overwrite`` (for a folder: an earlier report), never a symbolic link, pipe, device or
    other non-regular file, and never inside a run folder (one holding model.json)."""
    from .training import run_folder

    path = Path(output)
    what = "folder" if folder else "file"
    if path.is_symlink():
        raise ValueError(f"{output} is a symbolic link: write to a new {what} name instead")
    run = run_folder.enclosing_run(path)
    if run is not None:
        raise ValueError(f"{output} is inside the run folder {run}: write outside it")
    if path.exists():
        if path.is_dir() != folder or not (folder or path.is_file()):
            raise ValueError(f"{output} is {file_kind(path)}, not a {what}: choose a new path")
        if not overwrite:
            raise ValueError(f"{output} exists: pass --overwrite to replace it")
        problem = folder and any(path.iterdir()) and not_a_report(path)
        if problem:
            raise ValueError(
                f"{output} is not an earlier report ({problem}): --overwrite replaces only a "
                "report folder, whole; choose a new folder"
            )
    return path


#: The title every report's index.html carries (`Report.html`).
REPORT_TITLE = "<title>healthgym evaluation</title>"


def not_a_report(path: Path) -> str | None:
    """Why the folder ``path`` is not one that `evaluate` wrote (it holds index.html with a
    report's title, metrics.json, and nothing but them and PNG figures); None if it is."""
    others = sorted(
        p.name
        for p in path.iterdir()
        if not (p.is_file() and not p.is_symlink())
        or p.name not in ("index.html", "metrics.json")
        and p.suffix != ".png"
    )
    if others:
        return f"it holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}"
    if not (path / "metrics.json").is_file():
        return "no metrics.json"
    index = path / "index.html"
    if not index.is_file():
        return "no index.html"
    with open(index, errors="replace") as f:
        if REPORT_TITLE not in f.read(4096):
            return "its index.html is not a report's"
    return None


def file_kind(path: Path) -> str:
    """'a folder', 'a named pipe', 'a device', ... (what a non-regular path is)."""
    import stat

    mode = path.stat().st_mode
    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def report_lines(report: Report, index: Path) -> str:
    """The summary table and where the report went, for the terminal."""
    table = report.summary[["metric", "value", "reading"]].to_string(
        index=False, float_format=lambda x: f"{x:.3f}"
    )
    notes = "".join(f"\nnote: {n}" for n in report.notes)
    return f"{table}{notes}\nreport: {index} (metrics.json and figures beside it)"


def fresh_folder(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ... so a demo never overwrites an earlier one."""
    path, i = base, 1
    while path.exists() and any(path.iterdir()):
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    path.mkdir(parents=True, exist_ok=True)
    return path
