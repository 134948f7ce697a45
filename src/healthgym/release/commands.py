"""`healthgym release`: the bundle a data custodian hands out, registered on the command by
cli.py."""

from __future__ import annotations

from pathlib import Path

import click

from ..console import SEED, friendly_errors, load_cohort


@click.command("release")
@click.argument("run_dir", type=click.Path())
@click.option("--real", "real", required=True, type=click.Path(), help="The training patients.")
@click.option(
    "--holdout", required=True, type=click.Path(), help="Real patients the run never saw."
)
@click.option("-n", "n", required=True, type=click.IntRange(min=1), help="Patients to release.")
@click.option("-o", "--output", required=True, type=click.Path(), help="A new bundle folder.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--outcome", help="Static binary variable for the utility check.")
@click.option(
    "--sensitive",
    multiple=True,
    help="Static variable an attacker tries to infer (repeatable) [default: each static one].",
)
@click.option(
    "--quasi",
    multiple=True,
    help="Static variable the attacker knows (repeatable) [default: the other static ones].",
)
@click.option(
    "--max-mia",
    type=click.FloatRange(0.5, 1.0),
    default=0.6,
    show_default=True,
    help="Refuse when the membership-inference AUROC exceeds this.",
)
@click.option("--title", help="The release's name in its documents.")
@click.option(
    "--cohort",
    "built",
    type=click.Path(exists=True, dir_okay=False),
    help="The table `healthgym cohort` built (before any split): the datasheet states its "
    "database and definition [default: --real, where it is such a table].",
)
@friendly_errors
def release(
    run_dir: str,
    real: str,
    holdout: str,
    n: int,
    output: str,
    seed: int,
    outcome: str | None,
    sensitive: tuple[str, ...],
    quasi: tuple[str, ...],
    max_mia: float,
    title: str | None,
    built: str | None,
) -> None:
    """Draw N patients from RUN_DIR, check them against REAL and HOLDOUT, and write the
    release bundle (data, report, datasheet, model card, disclosure risk, manifest)."""
    from ..sources.build import read_provenance
    from ..training import run_folder
    from . import build_release

    out = Path(output)
    source = read_provenance(built or real)  # where the training table came from, if known
    if built is not None and source is None:
        raise ValueError(f"--cohort {built}: not a table written by healthgym cohort")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{output} exists: a release goes to a new (or empty) folder")
    if run_folder.enclosing_run(out) is not None:
        raise ValueError(f"{output} is inside a run folder: write the release outside it")
    schema_file = str(Path(run_dir) / run_folder.SCHEMA_FILE)
    if not Path(run_dir, run_folder.SCHEMA_FILE).exists():
        raise ValueError(f"{run_dir}: not a healthgym run folder (no {run_folder.SCHEMA_FILE})")
    train = load_cohort(real, None, None, schema_file, role="real")
    held = load_cohort(holdout, None, None, train.schema, role="holdout")
    figures = build_release(
        run_dir,
        train,
        held,
        n,
        out,
        seed=seed,
        outcome=outcome,
        sensitive=list(sensitive) or None,
        quasi=list(quasi) or None,
        max_mia=max_mia,
        title=title,
        source=source,
    )
    attribute = figures["attribute_inference"]
    click.echo(
        f"wrote the release of {n} synthetic patients to {out}: membership-inference AUROC "
        f"{figures['mia_auroc']:.3f}, attribute-inference excess at most "
        f"{attribute['max_excess']:.3f} ({attribute['reading']}); open "
        f"{out / 'report' / 'index.html'}, complete the [CUSTODIAN] answers in "
        f"{out / 'datasheet.md'}, then seal it again: "
        f"healthgym manifest {out}"
    )


@click.command("manifest")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--check", is_flag=True, help="Verify the files against MANIFEST.sha256 instead.")
@friendly_errors
def manifest(folder: str, check: bool) -> None:
    """Write a release FOLDER's SHA-256 manifest again (after the custodian's edits), or check
    it (--check: exit 1 naming each changed or missing file)."""
    from .manifest import MANIFEST, check_manifest, write_manifest

    path = Path(folder)
    if check:
        if not (path / MANIFEST).is_file():
            raise ValueError(f"{folder} has no {MANIFEST}")
        bad = check_manifest(path)
        for name in bad:
            click.echo(f"changed or missing: {name}", err=True)
        if bad:
            raise SystemExit(1)
        click.echo(f"{folder}: every file matches {MANIFEST}")
        return
    if not (path / "datasheet.md").is_file():
        raise ValueError(f"{folder} is not a release bundle (no datasheet.md)")
    entries = write_manifest(path)
    click.echo(f"wrote {MANIFEST} and manifest.json of {len(entries)} files in {folder}")
