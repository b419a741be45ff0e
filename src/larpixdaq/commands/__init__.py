"""Subcommands of `larpix-daq`.

Every module in this package that defines ``COMMANDS`` (a list of :class:`Command`) is
picked up by :mod:`larpixdaq.cli`, so a new subcommand never needs an edit elsewhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One `larpix-daq NAME` subcommand.

    ``configure`` adds the arguments to the subparser; ``run`` gets the parsed namespace and
    returns the process exit code (0 for success).
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
