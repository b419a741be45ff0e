"""`larpix-daq config`: the chips' configuration on a board, through the core.

    larpix-daq config show [CHIP ...]          board summary, or the software copy of chips
                                               (never read from the chips: that is `read`)
    larpix-daq config write|read|verify [CHIP ...]
    larpix-daq config set CHIP REG=VAL ...     change the software copy (then `write`)
    larpix-daq config load FILE|DIR [CHIP ...] chip configuration JSON into the software copy
    larpix-daq config network [FILE]           load a hydra network (sim: its own by default)
    larpix-daq config bring-up                 bring the network up, per io_channel

Every sub-command takes ``--board NAME`` (needed when several producers run), ``--core``,
``--timeout`` and ``--json``. Like every command it only asks the core; the producer that
owns the board does the work.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from larpixdaq.commands import Command
from larpixdaq.commands.common import (
    add_board_arguments,
    connect_operator,
    drive,
    parse_assignments,
)
from larpixdaq.errors import CommandError


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    for name, text, chips_help in (
            ("show", SHOW_HELP, "chips whose software copy to print (none given: only the "
                                "board summary, no registers)"),
            ("write", "write the software copy to the chips", "chip keys (default: all)"),
            ("read", "read the chips' registers back", "chip keys (default: all)"),
            ("verify", "compare the chips with the software copy", "chip keys (default: all)")):
        s = sub.add_parser(name, help=text, description=text)
        add_board_arguments(s)
        s.add_argument("chips", nargs="*", metavar="CHIP", help=chips_help)
    s = sub.add_parser("set", help="change registers of one chip in the software copy",
                       description="Change registers of one chip in the software copy held by "
                                   "the producer. The chip itself is not written: follow with "
                                   "`larpix-daq config write CHIP`, then `config verify CHIP`.")
    add_board_arguments(s)
    s.add_argument("chip", metavar="CHIP")
    s.add_argument("values", nargs="+", metavar="REG=VAL",
                   help="register name (or name[i]) = value (JSON: 3, [1,2,...])")
    s = sub.add_parser("load", help="chip configuration JSON file or directory")
    add_board_arguments(s)
    s.add_argument("path", metavar="FILE")
    s.add_argument("chips", nargs="*", metavar="CHIP",
                   help="chips a file without a chip key in its name applies to (default all)")
    s = sub.add_parser("network", help="load a hydra network JSON file")
    add_board_arguments(s)
    s.add_argument("file", nargs="?", default=None,
                   help="network file (default for a simulated board: its own)")
    s = sub.add_parser("bring-up", help="bring the network up with verification",
                       description="Reset the chips (unless --no-reset) and give each its chip "
                                   "id and UART links, io_channel by io_channel, verifying "
                                   "each. The chips then hold their power-on configuration: "
                                   "configure them next (`larpix-daq routine run quickstart "
                                   "bring_up=false`, or `config load` + `config write`).")
    add_board_arguments(s)
    s.add_argument("--no-reset", action="store_true", help="do not reset the chips first")


SHOW_HELP = ("without CHIP: each board's summary (kind, io_group, chips, io_channels, "
             "network); with CHIPs: their software copy, register by register, as the "
             "producer holds it (not read from the chips: `config read` does that)")

#: Registers named when saying what the chips hold after a reset, in this order.
_POWER_ON_SHOWN = ("threshold_global", "channel_mask", "pixel_trim_dac", "csa_enable",
                   "enable_periodic_trigger", "external_trigger_mask")


def power_on_text() -> str:
    """The power-on values of the registers that decide whether a chip sends data, from the
    register map (so the text cannot disagree with what a reset does)."""
    from larpixdaq.formats.registers import field

    parts = []
    for name in _POWER_ON_SHOWN:
        f = field(name)
        parts.append(f"{name} {f.default} on all {f.count}" if f.is_list
                     else f"{name} {f.default}")
    return ", ".join(parts)


def bring_up_text(result: dict[str, Any], reset: bool) -> str:
    """What a bring-up left on the chips, and what to do next."""
    chips = result.get("chips_up", 0)
    channels = ", ".join(str(c) for c in result.get("io_channels", []))
    lines = [f"bring-up done: {chips} chip(s) on io_channel(s) {channels} answer with their "
             "chip id"]
    if reset:
        lines.append(f"The chips were reset and are at their power-on configuration "
                     f"({power_on_text()}): every channel masked, so they send no data. Only "
                     "their chip id and UART link registers were written.")
    else:
        lines.append("The chips were not reset: each keeps the registers it had; only their "
                     "chip id and UART link registers were written.")
    lines += ["The software copy (`larpix-daq config show CHIP`) was not changed. Next, one of:",
              "  larpix-daq routine run quickstart bring_up=false   a working configuration on "
              "every chip, written and verified",
              "  larpix-daq config load FILE|DIR; larpix-daq config write; "
              "larpix-daq config verify"]
    return "\n".join(lines)


def set_text(result: dict[str, Any], board: str | None = None) -> str:
    """What `config set` changed, and that the chips still hold the old values."""
    updated = result.get("updated", {})
    keys = " ".join([*updated, *(["--board", board] if board else [])])
    lines = [f"changed in the software copy only: {key} {', '.join(regs) or 'nothing'}"
             for key, regs in updated.items()]
    lines.append(f"The chips are unchanged: `larpix-daq config write {keys}` writes the change, "
                 f"`larpix-daq config verify {keys}` checks it.")
    return "\n".join(lines)


def _chips(args: argparse.Namespace) -> list[str] | None:
    return list(args.chips) or None


def _print_registers(chips: dict[str, dict[str, Any]]) -> None:
    for key, regs in chips.items():
        print(f"chip {key}")
        for name, value in regs.items():
            print(f"  {name:<34} {value}")


def _print_result(args: argparse.Namespace, final: Any) -> None:
    result = final.data.get("result", final.data)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    what = args.what
    if what == "show" and "boards" in final.data:
        for name, info in final.data["boards"].items():
            print(f"{name}: {info['kind']} io_group {info['io_group']}, {info['n_chips']} chips "
                  f"on io_channels {info['io_channels']} (network: {info['network'] or '-'})")
    elif what in ("show", "read"):
        _print_registers(result["chips"])
    elif what == "verify":
        if result["match"]:
            print(f"{result['chips']} chip(s) match the software copy")
    elif what == "network":
        print(f"network {result.get('network')}: {result.get('n_chips')} chips on io_group "
              f"{result.get('io_group')}, io_channels {result.get('io_channels')}; next: "
              "`larpix-daq config bring-up`")
    elif what == "bring-up":
        print(bring_up_text(result, reset=not args.no_reset))
    elif what == "set":
        print(set_text(result, args.board))
    else:
        print(final.message)
        if result:
            print(json.dumps(result, sort_keys=True))


def run(args: argparse.Namespace) -> int:
    with connect_operator(args) as op:
        what, board = args.what, args.board
        if what == "show":
            reply = (op.retrieve_configuration(_chips(args), board=board) if args.chips
                     else op.get_boards(board))
        elif what == "write":
            reply = op.write_configuration(_chips(args), board=board)
        elif what == "read":
            reply = op.read_configuration(_chips(args), board=board)
        elif what == "verify":
            reply = op.validate_configuration(_chips(args), board=board)
        elif what == "set":
            reply = op.send_configuration({args.chip: parse_assignments(args.values)},
                                          board=board)
        elif what == "load":
            reply = op.load_configuration(args.path, _chips(args), board=board)
        elif what == "network":
            reply = op.load_board(args.file, board=board)
        else:
            reply = op.bring_up(board=board, reset=not args.no_reset)
        final = drive(reply, quiet=args.json)
    _print_result(args, final)
    if what == "verify" and not final.data["result"]["match"]:
        result = final.data["result"]
        if not args.json:
            for key, regs in result["differences"].items():  # chips asked as a list
                for name, (mine, theirs) in regs.items():
                    print(f"{key} {name}: software {mine}, chip {theirs}")
        raise CommandError(f"configuration differs: {result['summary']}")
    return 0


COMMANDS = [Command("config", "chip configuration on a board: show, write, read, verify, set, "
                              "load, network, bring-up", configure, run)]
