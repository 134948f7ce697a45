"""`healthgym export` (a cohort as an offline-RL dataset, Minari) and `healthgym ope` (a
policy's value from recorded stays), registered on the command by cli.py."""

from __future__ import annotations

import click

from ..console import SEED, friendly_errors, load_cohort, output_path


@click.command("export")
@click.argument("data", type=click.Path())
@click.option("--schema", "schema_file", type=click.Path(), help="Schema YAML (else inferred).")
@click.option("--id", "id_col", help="Patient id column (not needed with --schema).")
@click.option("--time", "time_col", help="Integer time-step column (not needed with --schema).")
@click.option("--format", "fmt", type=click.Choice(["minari"]), default="minari", show_default=True)
@click.option(
    "--actions",
    default="",
    help="Treatment variables, comma-separated [default: the schema's role: action ones].",
)
@click.option(
    "--reward",
    required=True,
    help="Expression over a step's variables and the next step's (NAME_next), e.g. "
    "'-(MAP_next < 65)' (docs/rl.md).",
)
@click.option("--name", "dataset_id", default="healthgym/cohort-v0", show_default=True)
@click.option(
    "--hide",
    default="",
    help="Variables left out of the observations, comma-separated (e.g. an outcome known only "
    "after the stay); the reward may still use them.",
)
@click.option(
    "--action-bins",
    type=click.IntRange(2, 100),
    default=5,
    show_default=True,
    help="Quantile bins of a real action (2 to 100).",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(),
    help="A default model's run folder on this schema: the dataset names its simulator as the "
    "environment (recover_environment, d3rlpy.datasets.get_minari).",
)
@click.option(
    "--previous-treatment",
    "previous",
    is_flag=True,
    help="Observations hold the treatments of the step before (one-hot), as "
    "env.make(previous=True).",
)
@click.option(
    "--normalize",
    is_flag=True,
    help="Scale each observation column by its mean and standard deviation (the --run's "
    "simulated patients', else DATA's), as env.make(normalize=True).",
)
@click.option("-o", "--output", required=True, type=click.Path(), help="Minari datasets folder.")
@friendly_errors
def export(
    data: str,
    schema_file: str | None,
    id_col: str | None,
    time_col: str | None,
    fmt: str,
    actions: str,
    reward: str,
    dataset_id: str,
    hide: str,
    action_bins: int,
    run_dir: str | None,
    previous: bool,
    normalize: bool,
    output: str,
) -> None:
    """Export DATA (real or synthetic cohort) as an offline-RL dataset (Minari)."""
    from ..extras import require
    from ..training import run_folder

    require("rl", "healthgym export")
    from .offline import check_dataset_id, export_minari

    check_dataset_id(dataset_id)  # before anything is read or created
    run = run_folder.enclosing_run(output)
    if run is not None:
        raise ValueError(f"{output} is inside the run folder {run}: write outside it")
    cohort = load_cohort(data, id_col, time_col, schema_file)
    names = [a.strip() for a in actions.split(",") if a.strip()]
    path = export_minari(
        cohort,
        output,
        actions=names,
        reward=reward,
        dataset_id=dataset_id,
        action_bins=action_bins,
        hidden=[h.strip() for h in hide.split(",") if h.strip()],
        run=run_dir,
        previous=previous,
        normalize=normalize,
    )
    click.echo(
        f"wrote Minari dataset {dataset_id!r} to {path}; read it with "
        f"MINARI_DATASETS_PATH={output} and minari.load_dataset({dataset_id!r})"
    )


@click.command("ope")
@click.argument("data", type=click.Path())
@click.option("--schema", "schema_file", type=click.Path(), help="Schema YAML (else inferred).")
@click.option("--id", "id_col", help="Patient id column (not needed with --schema).")
@click.option("--time", "time_col", help="Integer time-step column (not needed with --schema).")
@click.option("--action", required=True, help="The treatment (a binary or categorical action).")
@click.option(
    "--reward",
    required=True,
    help="Per decision, over its row and the stay's next (NAME_next) and `last`, e.g. "
    "'last * (1 - died_next)' (survival) (docs/rl.md).",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    required=True,
    help="A policy: an expression over a decision row giving the treatment's level index "
    "(true treats), e.g. 'Lactate > 2.5', '1' (always), '0' (never). Repeatable.",
)
@click.option(
    "--estimators", default="wis,wpdis,fqe,dr", show_default=True, help="Comma-separated."
)
@click.option("--bootstrap", type=click.IntRange(0, 10_000), default=100, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("-o", "--output", type=click.Path(), help="Also write the estimates as JSON here.")
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
@friendly_errors
def ope(
    data: str,
    schema_file: str | None,
    id_col: str | None,
    time_col: str | None,
    action: str,
    reward: str,
    policies: tuple[str, ...],
    estimators: str,
    bootstrap: int,
    seed: int,
    output: str | None,
    overwrite: bool,
) -> None:
    """Estimate each --policy's value from the recorded stays in DATA (off-policy evaluation:
    WIS, WPDIS, FQE, doubly robust, with bootstrap 95% intervals)."""
    import json

    import numpy as np

    from ..data.atomic import write_text_atomic
    from . import ope as estimators_module
    from .rewards import Reward

    if output:
        output_path(output, overwrite)
    which = tuple(e.strip() for e in estimators.split(",") if e.strip())
    unknown = sorted(set(which) - set(estimators_module.ESTIMATORS))
    if unknown:
        raise ValueError(
            f"unknown estimators {unknown}; known: {list(estimators_module.ESTIMATORS)}"
        )
    cohort = load_cohort(data, id_col, time_col, schema_file)
    made = [(p, estimators_module.expression_policy(p, cohort, action)) for p in policies]
    checked = Reward(reward, cohort.schema.names)
    d = estimators_module.decisions_with_reward(cohort, action, checked)
    observed = float(np.bincount(d.stay, weights=d.rewards).mean())
    click.echo(f"{d.stays} stays, {len(d.actions)} decisions; recorded mean return {observed:.4f}")
    found = {}
    for spec, policy in made:
        est = estimators_module.evaluate_policy(
            d, policy, estimators=which, bootstrap=bootstrap, seed=seed
        )
        found[spec] = est
        cells = "  ".join(
            f"{k} {e['value']:.4f} [{e['low']:.4f}, {e['high']:.4f}]" for k, e in est.items()
        )
        click.echo(f"{spec}: {cells}")
    if output:
        text = json.dumps({"recorded_return": observed, "policies": found}, indent=1)
        write_text_atomic(output, text)
        click.echo(f"wrote {output}")
