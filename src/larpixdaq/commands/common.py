"""Arguments and parsing that many `larpix-daq` commands share, defined once."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from typing import Any

from larpixdaq.errors import CommandError
from larpixdaq.runcontrol.addresses import CORE_ENV, DEFAULT_CORE

RUNS_DB_NAME = "runs.sqlite"
"""The run database's file name in a data directory (where `larpix-daq up` keeps it)."""


def core_address(text: str) -> str:
    """A ``--core`` value as ZeroMQ wants it: ``HOST:PORT`` gains ``tcp://``; anything that is
    not ``tcp://HOST:PORT`` (or ``ipc://PATH``) is refused with the reason, in one line."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme == "ipc" and rest:
        return text
    host, colon, port = rest.rpartition(":")
    if scheme != "tcp" or not colon or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an address of the core: give tcp://HOST:PORT or HOST:PORT, "
            f"e.g. {DEFAULT_CORE}")
    return f"tcp://{host}:{port}"


def add_core_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--core``: the core's address, from ``$LARPIX_DAQ_CORE`` when not given."""
    parser.add_argument(
        "--core", type=core_address, default=os.environ.get(CORE_ENV, DEFAULT_CORE),
        help=help or f"address of the core: tcp://HOST:PORT or HOST:PORT (default: "
                     f"${CORE_ENV} or {DEFAULT_CORE})")


def add_keys_argument(parser: argparse.ArgumentParser, who: str) -> None:
    """``--keys``: the CURVE key directory, from ``$LARPIX_DAQ_KEYS`` when not given."""
    parser.add_argument(
        "--keys", default=os.environ.get("LARPIX_DAQ_KEYS"),
        help=f"CURVE key directory ({who}; default $LARPIX_DAQ_KEYS; none: no encryption)")


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` words; values are JSON when they parse (``[1,2]``, ``3``), else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{item!r} is not NAME=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    """``--core``, ``--keys`` and ``--timeout``: what every command that asks the core takes."""
    add_core_argument(parser)
    add_keys_argument(parser, "made by `larpix-daq keys`")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for the core's answer (default 10)")


def connect_operator(args: argparse.Namespace) -> Any:
    """An :class:`~larpixdaq.runcontrol.operator.Operator` for the parsed client arguments;
    a bad key directory is a one-line CommandError. Imported here so that commands that never
    talk to the core start without ZeroMQ."""
    from larpixdaq.runcontrol.operator import Operator
    from larpixdaq.runcontrol.security import KeysError

    try:
        return Operator(args.core, timeout=args.timeout, keys=args.keys, kind="cli")
    except KeysError as exc:
        raise CommandError(str(exc)) from None


def final_reply(reply: Any, quiet: bool = False) -> Any:
    """Print progress, return the final result, or raise a one-line CommandError."""
    from larpixdaq.runcontrol.operator import Progress, Timeout

    final = None
    for response in reply:
        if isinstance(response, Progress) and not quiet:
            done = ", ".join(response.data.get("done", []))
            print(f"  {response.data.get('transition', '')}: acknowledged by {done}"
                  if done else f"  progress: {response.data}")
        final = response
    if isinstance(final, Timeout):
        raise CommandError(f"{final.message}; is `larpix-daq core` running there?")
    if not final.success:
        raise CommandError(final.message)
    return final


def _progress_text(data: dict[str, Any]) -> str:
    return "  " + " ".join(f"{k}={v}" for k, v in data.items())


def shown(reply: Any, quiet: bool = False) -> Iterator[Any]:
    """Pass a reply's responses on, printing each progress step as it arrives."""
    from larpixdaq.runcontrol.operator import Progress

    for response in reply:
        if isinstance(response, Progress) and not quiet:
            print(_progress_text(response.data), flush=True)
        yield response


def drive(reply: Any, quiet: bool = False) -> Any:
    """Progress printed, then the final result (a failure is a one-line CommandError)."""
    return final_reply(shown(reply, quiet), quiet=True)


def add_board_arguments(p: argparse.ArgumentParser) -> None:
    """The client arguments plus ``--board`` and ``--json``: commands that drive a board."""
    add_client_arguments(p)
    p.add_argument("--board", default=None,
                   help="producer (board) name; needed only when several are registered")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def add_no_sync_argument(p: argparse.ArgumentParser) -> None:
    """``--no-sync``: storage acknowledges what the kernel holds, not what the disk holds."""
    p.add_argument("--no-sync", action="store_true",
                   help="acknowledge a commit once the kernel has it, without waiting for the "
                        "disk (fsync): faster on a slow disk, but a power cut or kernel crash "
                        "of the storage host can then lose acknowledged data (a killed "
                        "storage process still loses nothing)")


def sim_rate(text: str) -> float | str:
    """A ``--sim-rate`` value: packets per second (>= 0) or ``physics``."""
    if text == "physics":
        return text
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a rate in packets/s nor 'physics'") from None
    if rate < 0:
        raise argparse.ArgumentTypeError(f"a rate cannot be negative ({text})")
    return rate


def add_routines_argument(p: argparse.ArgumentParser) -> None:
    """``--routines DIR``: where `load_routines` may load routine files from (repeatable)."""
    env = os.environ.get("LARPIX_DAQ_ROUTINES")
    p.add_argument("--routines", action="append", metavar="DIR",
                   default=[d for d in env.split(os.pathsep) if d] if env else [],
                   help="a directory of routine files the load_routines action may load "
                        "(repeat for several; default $LARPIX_DAQ_ROUTINES, separated by "
                        f"{os.pathsep!r}); no other directory is ever loaded")


def add_beam_arguments(parser: argparse.ArgumentParser, where: str) -> None:
    """``--beam``, ``--beam-period``, ``--beam-interactions``, ``--trigger-io-group``: spills
    on the simulated boards (see :mod:`larpixdaq.boards.beam`)."""
    from larpixdaq.boards.beam import NUMI_PERIOD_S

    parser.add_argument("--beam", action="store_true",
                        help=f"simulate a neutrino beam on {where}: spills with neutrino-like "
                             "activity, and a TRIG word per spill on the trigger io_group")
    parser.add_argument("--beam-period", type=float, default=NUMI_PERIOD_S,
                        help=f"seconds between spills (default {NUMI_PERIOD_S}, NuMI's cycle)")
    parser.add_argument("--beam-interactions", type=float, default=1.0,
                        help="mean neutrino interactions per spill on each board's tiles "
                             "(default 1)")
    parser.add_argument("--trigger-io-group", type=int, default=None,
                        help="the io_group whose board receives the beam trigger (default: "
                             "the lowest simulated io_group; a producer started alone: its own)")


def beam_for(args: argparse.Namespace, io_group: int, trigger_io_group: int):
    """The :class:`~larpixdaq.boards.beam.Beam` of one board from the options (None without
    ``--beam``); CommandError with the reason for values that cannot be used."""
    if not getattr(args, "beam", False):
        return None
    from larpixdaq.boards.beam import Beam

    try:
        return Beam(period_s=args.beam_period, interactions=args.beam_interactions,
                    trigger=io_group == trigger_io_group)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def beam_options(args: argparse.Namespace, trigger_io_group: int) -> list[str]:
    """The beam options again, as words for a child command line (none without ``--beam``)."""
    if not getattr(args, "beam", False):
        return []
    return ["--beam", "--beam-period", str(args.beam_period), "--beam-interactions",
            str(args.beam_interactions), "--trigger-io-group", str(trigger_io_group)]
