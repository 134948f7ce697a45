"""Rebuild a bundled cohort: `python -m healthgym.datasets --source set-a.csv.gz [--cohort C]`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .demo_data import DATA, build_demo, write_demo
from .visit_cohort import build_visits, write_visits

BUILDERS = {"demo": (build_demo, write_demo), "visits": (build_visits, write_visits)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m healthgym.datasets",
        description="Rebuild a bundled cohort (the demo, or the visit cohort).",
    )
    parser.add_argument("--source", required=True, help="set-a.csv.gz, set-a.tar.gz or set-a/")
    parser.add_argument("--outcomes", help="Outcomes-a.txt (default: beside --source)")
    parser.add_argument("--out", default=str(DATA), help="output folder (default: the package's)")
    parser.add_argument("--cohort", choices=sorted(BUILDERS), default="demo")
    args = parser.parse_args(argv)
    build, write = BUILDERS[args.cohort]
    cohort = build(args.source, args.outcomes)
    print(f"{cohort} -> {write(cohort, args.out)}")


if __name__ == "__main__":
    main()
