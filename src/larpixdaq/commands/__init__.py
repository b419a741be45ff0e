"""Subcommands of `larpix-daq`.

Every module in this package that defines ``COMMANDS`` (a list of :class:`Command`) is
picked up by :func:`discover_commands` (for :mod:`larpixdaq.cli`), so a new subcommand never
needs an edit elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
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


def discover_commands() -> list[Command]:
    """Every :class:`Command` declared by a module of this package, by name.

    Here rather than in the dispatcher so that a command (``up``) can ask which others exist
    without importing the dispatcher above it."""
    found: dict[str, Command] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            if command.name in found:
                raise RuntimeError(f"two modules declare the command {command.name!r}")
            found[command.name] = command
    return [found[name] for name in sorted(found)]
