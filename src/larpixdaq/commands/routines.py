"""`larpix-daq routine`: list, load and run routines on a board, through the core.

    larpix-daq routine list
    larpix-daq routine load DIR
    larpix-daq routine run NAME [PARAM=VALUE ...] [--stop-after S]
    larpix-daq routine stop

Progress is printed as it arrives; `run` exits 1 unless the routine ended ``success``.
`stop` answers at once, even while the routine runs (from another terminal): the routine
ends ``aborted`` at its next step, and its `run` prints so and exits 1.
"""

from __future__ import annotations

import argparse
import json

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
    s = sub.add_parser("load", help="load routine files (NAME.py with routine(ctx, ...))")
    add_board_arguments(s)
    s.add_argument("directory")
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


def run(args: argparse.Namespace) -> int:
    with connect_operator(args) as op:
        if args.what == "list":
            final = drive(op.list_routines(board=args.board), quiet=args.json)
            routines = final.data["result"]["routines"]
            if args.json:
                print(json.dumps(routines, indent=2))
                return 0
            for r in routines:
                params = ", ".join(
                    p["name"] + ("" if p["required"] else f"={json.dumps(p.get('default'))}")
                    for p in r["params"])
                first = r["doc"].splitlines()[0] if r["doc"] else ""
                print(f"{r['name']}({params})  [{r['origin']}]\n    {first}")
            return 0
        if args.what == "load":
            final = drive(op.load_routines(args.directory, board=args.board), quiet=args.json)
            loaded = final.data["result"]["loaded"]
            print(json.dumps(final.data["result"]) if args.json
                  else f"loaded {len(loaded)} routine(s): {', '.join(loaded) or 'none'}")
            return 0
        if args.what == "stop":
            final = drive(op.stop_routine(board=args.board), quiet=args.json)
            result = final.data["result"]
            print(json.dumps(result) if args.json else result["message"])
            return 0
        params = parse_assignments(args.params)
        final = drive(op.run_routine(args.name, board=args.board,
                                     routine_timeout=args.stop_after,
                                     routine_params=params), quiet=args.json)
    outcome = final.data["result"]
    if args.json:
        print(json.dumps(outcome, indent=2, sort_keys=True))
    else:
        print(f"{outcome['message']} ({outcome['status']}, {outcome['seconds']:.2f} s)")
        print(json.dumps(outcome["result"], indent=2, sort_keys=True))
    return 0


COMMANDS = [Command("routine", "routines on a board: list, load DIR, run NAME [k=v ...], stop",
                    configure, run)]
