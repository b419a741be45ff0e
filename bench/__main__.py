"""Run the benchmarks: ``python -m bench [NAME ...] [--quick]`` (or ``larpix-daq bench``)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from bench.table import print_table


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main(argv: list[str] | None = None) -> int:
    names = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in names]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
    for name in args.names or names:
        module = importlib.import_module(f"bench.bench_{name}")
        print_table(module.TITLE, module.run(quick=args.quick))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
