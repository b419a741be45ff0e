"""`larpix-daq pacman-emulator`: a simulated PACMAN board with tiles, on the network.

It stands where a real board would, so the DAQ (or the field's own client) can be run and
tried on a laptop; ``--write-network`` writes the network file that matches its tiles, as a
real tile comes with its own.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from larpixdaq.commands import Command
from larpixdaq.errors import CommandError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--cmd-port", type=int, default=5555, help="REP command port (0 = any)")
    parser.add_argument("--data-port", type=int, default=5556, help="PUB data port (0 = any)")
    parser.add_argument("--echo-port", type=int, default=5554, help="PUB reply-echo port (0 = any)")
    parser.add_argument("--io-group", type=int, default=1, help="io_group of this board")
    parser.add_argument("--tiles", type=int, default=1, help="number of tiles, 1..8")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    parser.add_argument("--rate-scale", type=float, default=1.0,
                        help="multiply every simulated rate by this")
    parser.add_argument("--write-network", metavar="FILE", type=Path,
                        help="write the network (controller JSON) of the simulated tiles here")


def _port(name: str, value: int) -> int:
    if not 0 <= value <= 65535:
        raise CommandError(f"--{name} {value} is not a TCP port (0..65535)")
    return value


def make_board(args: argparse.Namespace) -> Any:
    if not 1 <= args.tiles <= 8:
        raise CommandError(f"--tiles {args.tiles}: a PACMAN serves 1 to 8 tiles")
    if not 0 <= args.io_group <= 255:
        raise CommandError(f"--io-group {args.io_group} is out of range 0..255")
    from larpixdaq.boards.simboard import SimulatedBoard

    return SimulatedBoard(io_group=args.io_group, tiles=args.tiles, seed=args.seed,
                          rate_scale=args.rate_scale)


def run(args: argparse.Namespace) -> int:
    from larpixdaq.boards.pacman_emulator import PacmanEmulator

    ports = {name: _port(name, getattr(args, name.replace("-", "_")))
             for name in ("cmd-port", "data-port", "echo-port")}
    board = make_board(args)
    if args.write_network:
        try:
            args.write_network.write_text(json.dumps(board.network_config(), indent=4) + "\n")
        except OSError as err:
            raise CommandError(
                f"cannot write the network file {args.write_network}: {err}"
            ) from err
    emu = PacmanEmulator(
        board, host=args.host, cmd_port=ports["cmd-port"], data_port=ports["data-port"],
        echo_port=ports["echo-port"],
    )
    try:
        emu.start()
    except OSError as err:
        raise CommandError(str(err)) from err
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"PACMAN emulator io_group {args.io_group}, {args.tiles} tile(s)")
        print(f"  commands {emu.cmd_endpoint}")
        print(f"  data     {emu.data_endpoint}")
        print(f"  echo     {emu.echo_endpoint}")
        if args.write_network:
            print(f"  network  {args.write_network}")
        sys.stdout.flush()
        while not stop.wait(0.2):
            if not emu.running:
                raise CommandError(f"the emulator stopped: {emu.failure!r}")
    finally:
        emu.stop()
        for s, h in previous.items():
            signal.signal(s, h)
    c = emu.counters
    print(f"stopped: {c['requests']} requests, {c['errors']} errors, "
          f"{c['data_messages']} data messages, {c['data_words']} words published")
    return 0


COMMANDS = [Command("pacman-emulator", "serve a simulated PACMAN board with LArPix tiles",
                    configure, run)]
