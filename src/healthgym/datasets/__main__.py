"""Rebuild the bundled demo cohort: `python -m healthgym.datasets --source set-a.csv.gz`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .demo_data import DATA, build_demo, write_demo


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m healthgym.datasets", description="Rebuild the bundled demo cohort."
    )
    parser.add_argument("--source", required=True, help="set-a.csv.gz, set-a.tar.gz or set-a/")
    parser.add_argument("--outcomes", help="Outcomes-a.txt (default: beside --source)")
    parser.add_argument("--out", default=str(DATA), help="output folder (default: the package's)")
    args = parser.parse_args(argv)
    cohort = build_demo(args.source, args.outcomes)
    print(f"{cohort} -> {write_demo(cohort, args.out)}")


if __name__ == "__main__":
    main()
