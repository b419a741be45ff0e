"""`larpix-daq bench`: run the benchmarks of the source checkout (``python -m bench``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from larpixdaq.commands import Command
from larpixdaq.errors import CommandError


def _checkout_root() -> Path:
    root = Path(__file__).resolve().parents[3]
    if not (root / "bench" / "__main__.py").exists():
        raise CommandError(
            "the benchmarks live in the source checkout's bench/ folder, which this "
            "installation does not have; run from a checkout installed with `pip install -e .`"
        )
    return root


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all if none)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")


def run(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "bench", *args.names] + (["--quick"] if args.quick else [])
    return subprocess.call(cmd, cwd=_checkout_root())


COMMANDS = [Command("bench", "run the benchmarks and print tables of figures", configure, run)]
