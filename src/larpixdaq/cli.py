"""The `larpix-daq` command: a thin dispatcher over :mod:`larpixdaq.commands`.

Subcommands live one per module in ``larpixdaq.commands``; this file only discovers them,
parses the command line and turns an uncaught :class:`CommandError` into a one-line reason
and a non-zero exit status, so that every command fails the same way.
"""

from __future__ import annotations

import argparse
import os
import sys

from larpixdaq.commands import discover_commands
from larpixdaq.errors import CommandError
from larpixdaq.version import __version__


class _Parser(argparse.ArgumentParser):
    """A parser whose refusals are one line (the reason, and where to read the usage), as
    every other error of the command is; sub-commands' parsers are of this class too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="larpix-daq",
        description="Data acquisition for LArPix: run control, boards, files.",
    )
    parser.add_argument("--version", action="version", version=f"larpix-daq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in discover_commands():
        sp = sub.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sp)
        sp.set_defaults(_run=command.run)
    return parser


def _actions(parser: argparse.ArgumentParser) -> list[str]:
    """The sub-actions of a command (`config show`, ...), in the order it declares them."""
    for act in parser._actions:  # argparse keeps its sub-parsers here, and nowhere public
        if isinstance(act, argparse._SubParsersAction):
            return list(act.choices)
    return []


def commands_markdown() -> str:
    """The README's table of commands, from the dispatcher itself (a test compares them, so
    the README cannot list a command that is not there or miss one that is)."""
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lines = ["| command | what it does |", "|---|---|"]
    for command in discover_commands():
        actions = _actions(subs.choices[command.name])
        # A table cell keeps a | only escaped, even inside backquotes.
        shown = command.name
        if actions:
            shown += " " + "\\|".join(actions)
        lines.append(f"| `larpix-daq {shown}` | {command.help} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CommandError as exc:
        print(f"larpix-daq {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"larpix-daq {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`larpix-daq status | head`): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
