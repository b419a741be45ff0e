"""`larpix-daq routine`: list, load and run routines on a board, through the core.

    larpix-daq routine list
    larpix-daq routine load [DIR]
    larpix-daq routine run NAME [PARAM=VALUE ...] [--stop-after S]
    larpix-daq routine stop
    larpix-daq routine results [NAME] [--limit N]

Progress is printed as it arrives; `run` exits 1 unless the routine ended ``success``, and
prints a short summary (arrays by their shape): the whole result is in the files the
producer keeps in its data directory (``routines/``), listed by `results`, and in ``--json``.
`stop` answers at once, even while the routine runs (from another terminal): the routine
ends ``aborted`` at its next step, and its `run` prints so and exits 1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from larpixdaq.commands import Command
from larpixdaq.commands.common import (
    add_board_arguments,
    connect_operator,
    drive,
    parse_assignments,
)


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    s = sub.add_parser("list", help="routines the board offers, with their parameters")
    add_board_arguments(s)
    s = sub.add_parser("load", help="load routine files (NAME.py with routine(ctx, ...)) from "
                                    "the producer's routine directories (its --routines)")
    add_board_arguments(s)
    s.add_argument("directory", nargs="?", default=None,
                   help="one of the producer's --routines directories (default: all)")
    s = sub.add_parser("run", help="run a routine; progress as it goes, then its result")
    add_board_arguments(s)
    s.add_argument("name")
    s.add_argument("params", nargs="*", metavar="PARAM=VALUE",
                   help="parameters; values are JSON when they parse, else text")
    s.add_argument("--stop-after", type=float, default=None, metavar="S",
                   help="stop the routine at its next step after S seconds (aborted)")
    s.set_defaults(timeout=3600.0)
    s = sub.add_parser("stop", help="stop the running routine (it ends aborted at its next "
                                    "step)")
    add_board_arguments(s)
    s = sub.add_parser("results", help="the routine results the board's producer kept "
                                       "(newest first): time, status, parameters, files")
    add_board_arguments(s)
    s.add_argument("routine", nargs="?", default=None, help="only this routine's results")
    s.add_argument("--limit", type=int, default=20, help="at most N results (default 20)")


def _accepts(p: dict) -> str:
    """What a parameter accepts beyond its type, in words ('' if nothing more)."""
    bits = [f"> {p['above']:g}" if "above" in p else "",
            f">= {p['minimum']:g}" if "minimum" in p else "",
            f"<= {p['maximum']:g}" if "maximum" in p else "",
            f"one of {', '.join(map(str, p['choices']))}" if "choices" in p else "",
            f"each >= {p['item_minimum']:g}, <= {p['item_maximum']:g}"
            if "item_minimum" in p and "item_maximum" in p else ""]
    return " ".join(b for b in bits if b)


def _print_results(result: dict) -> None:
    rows = result["results"]
    if result.get("directory") is None:
        print(result.get("message", "no results kept"))
        return
    print(f"{len(rows)} result(s) in {result['directory']}" + (":" if rows else ""))
    for r in rows:
        params = " ".join(f"{k}={json.dumps(v)}" for k, v in (r.get("params") or {}).items())
        print(f"  {r.get('finished', '?')}  {r.get('routine', '?'):<15} "
              f"{r.get('status', '?'):<8} {params}")
        print(f"      {r.get('summary_file')}"
              + (f" + {r['arrays_file']}" if r.get("arrays_file") else ""))


def _print_outcome(outcome: dict) -> None:
    """The outcome in a few lines: the message, the summary (arrays by shape), the files."""
    from larpixdaq.routines.results import split_result, summary_lines

    print(f"{outcome['message']} ({outcome['status']}, {outcome['seconds']:.2f} s)")
    kept = outcome.get("kept")
    summary = kept["summary"] if kept else split_result(outcome["result"])[0]
    for line in summary_lines(summary):
        print(f"  {line}")
    if kept:
        print(f"kept in {kept['summary_file']}"
              + (f" (arrays: {kept['arrays_file']})" if kept.get("arrays_file") else ""))
    else:
        print("not kept on disk (the producer has no data directory); --json prints it all")


def _print_routines(result: dict) -> None:
    for r in result["routines"]:
        params = ", ".join(
            p["name"] + ("" if p["required"] else f"={json.dumps(p.get('default'))}")
            for p in r["params"])
        first = r["doc"].splitlines()[0] if r["doc"] else ""
        print(f"{r['name']}({params})  [{r['origin']}]\n    {first}")
        accepts = [f"{p['name']} {_accepts(p)}" for p in r["params"] if _accepts(p)]
        if accepts:
            print(f"    accepts: {'; '.join(accepts)}")


def _print_loaded(result: dict) -> None:
    loaded = result["loaded"]
    print(f"loaded {len(loaded)} routine(s): {', '.join(loaded) or 'none'}")


def _request(op: Any, args: argparse.Namespace) -> Any:
    """The Operator request a subcommand makes (its replies, not yet driven)."""
    what, board = args.what, args.board
    if what == "list":
        return op.list_routines(board=board)
    if what == "load":
        return op.load_routines(args.directory, board=board)
    if what == "results":
        return op.routine_results(args.limit, args.routine, board=board)
    if what == "stop":
        return op.stop_routine(board=board)
    return op.run_routine(args.name, board=board, routine_timeout=args.stop_after,
                          routine_params=parse_assignments(args.params))


#: How each subcommand shows the action's result: with --json, the key printed (None: all of
#: it) and the ``json.dumps`` options; else the function that writes it for a person.
_SHOW: dict[str, tuple[str | None, dict[str, Any], Callable[[dict], None]]] = {
    "list": ("routines", {"indent": 2}, _print_routines),
    "load": (None, {}, _print_loaded),
    "results": (None, {"indent": 2, "sort_keys": True}, _print_results),
    "stop": (None, {}, lambda r: print(r["message"])),
    "run": (None, {"indent": 2, "sort_keys": True}, _print_outcome),
}


def run(args: argparse.Namespace) -> int:
    with connect_operator(args) as op:
        final = drive(_request(op, args), quiet=args.json)
    result = final.data["result"]
    key, dumps, write = _SHOW[args.what]
    if args.json:
        print(json.dumps(result if key is None else result[key], **dumps))
    else:
        write(result)
    return 0


COMMANDS = [Command("routine", "routines on a board: list, load [DIR] (of the producer's "
                               "--routines), run NAME [k=v ...], stop, results",
                    configure, run)]
