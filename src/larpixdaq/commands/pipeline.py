"""Data-path commands: `producer`, `aggregator`, `storage`, each one component on its own.

They run until Ctrl-C/SIGTERM, register with the core at ``--core`` and find each other
either through explicit addresses or through the addresses the aggregator advertises to
the core.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from larpixdaq.commands import Command
from larpixdaq.commands.common import (
    add_beam_arguments,
    add_core_argument,
    add_keys_argument,
    add_no_sync_argument,
    add_routines_argument,
    beam_for,
    sim_rate,
)
from larpixdaq.errors import CommandError
from larpixdaq.pipeline.addresses import DEFAULT_INLET, DEFAULT_MONITOR, DEFAULT_OUTLET
from larpixdaq.pipeline.backlog import DEFAULT_HOLD_BYTES
from larpixdaq.pipeline.configrecord import CONFIG_RECORD_DIR

ROUTINE_RESULTS_DIR = "routines"
"""Where in its data directory a producer keeps routine results."""


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _run_component(comp, what: str) -> int:
    from larpixdaq.runcontrol.component import ComponentError

    try:
        comp.run_forever()
    except ComponentError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _aggregator_address(args: argparse.Namespace, key: str, default: str) -> str:
    """The explicit address, else the one the aggregator advertised to the core."""
    if getattr(args, "aggregator", None):
        return args.aggregator
    from larpixdaq.runcontrol.operator import Operator

    deadline = time.monotonic() + 10
    with Operator(args.core, timeout=2) as op:
        while time.monotonic() < deadline:
            final = op.call("clients")
            if final.success:
                for comp in final.data.get("components", []):
                    address = (comp.get("endpoints") or {}).get(key)
                    if address:
                        return str(address)
            time.sleep(0.2)
    print(f"no aggregator advertised by the core at {args.core}; using {default}",
          file=sys.stderr)
    return default


# --- aggregator ------------------------------------------------------------------------------

def configure_aggregator(p: argparse.ArgumentParser) -> None:
    add_core_argument(p)
    add_keys_argument(p, "its sockets then admit only the authorised keys")
    p.add_argument("--name", default="aggregator", help="component name")
    p.add_argument("--inlet", default=DEFAULT_INLET, help="where producers connect")
    p.add_argument("--outlet", default=DEFAULT_OUTLET, help="where storage connects")
    p.add_argument("--monitor", default=DEFAULT_MONITOR,
                   help="PUB address for monitors ('' for none)")
    p.add_argument("--window-mb", type=float, default=64,
                   help="frames held until storage has them on disk, at most (MB)")


def run_aggregator(args: argparse.Namespace) -> int:
    import zmq

    from larpixdaq.pipeline.aggregator import Aggregator, AggregatorComponent

    _logging()
    from larpixdaq.runcontrol.security import KeysError, server_keys

    try:
        keys = server_keys(args.keys)
    except KeysError as exc:
        raise CommandError(str(exc)) from None
    agg = Aggregator(args.inlet, args.outlet, args.monitor or None,
                     window=int(args.window_mb * (1 << 20)), keys=keys)
    try:
        agg.bind()
    except zmq.ZMQError as exc:
        raise CommandError(f"aggregator cannot listen: {exc}") from None
    print(f"aggregator {args.name}: producers -> {agg.inlet}, storage <- {agg.outlet}, "
          f"monitors <- {agg.monitor}", flush=True)
    return _run_component(AggregatorComponent(args.name, args.core, agg, keys=args.keys),
                          "aggregator")


# --- storage ---------------------------------------------------------------------------------

def configure_storage(p: argparse.ArgumentParser) -> None:
    add_core_argument(p)
    add_keys_argument(p, "for the core and the aggregator")
    p.add_argument("--name", default="storage", help="component name")
    p.add_argument("--aggregator", default=None,
                   help="the aggregator's storage address (default: as advertised to the core)")
    p.add_argument("--data-dir", default="data", help="where run files are written")
    p.add_argument("--part-mb", type=float, default=4096,
                   help="start a new part of the run file after this many MB of packets")
    p.add_argument("--compression", default=None, choices=["gzip", "lzf"],
                   help="compress the packets dataset")
    p.add_argument("--reserve-mb", type=float, default=64,
                   help="room to leave free on the data disk: a batch that would eat into it "
                        "is refused as a full disk (the run fails, the files stay whole)")
    add_no_sync_argument(p)


def run_storage(args: argparse.Namespace) -> int:
    from larpixdaq.pipeline.runfile import StorageError
    from larpixdaq.pipeline.storage import StorageComponent, StorageLink

    _logging()
    address = _aggregator_address(args, "aggregator_out", DEFAULT_OUTLET)
    link = StorageLink(address, args.data_dir, part_bytes=int(args.part_mb * (1 << 20)),
                       compression=args.compression,
                       reserve_bytes=int(args.reserve_mb * (1 << 20)),
                       durable=not args.no_sync)
    try:
        comp = StorageComponent(args.name, args.core, link, keys=args.keys)
    except StorageError as exc:
        raise CommandError(str(exc)) from None
    print(f"storage {args.name}: frames from {address}, files in {args.data_dir}", flush=True)
    return _run_component(comp, "storage")


# --- producer --------------------------------------------------------------------------------

def configure_producer(p: argparse.ArgumentParser) -> None:
    add_core_argument(p)
    add_keys_argument(p, "for the core and the aggregator")
    p.add_argument("--name", default=None, help="component name (default producer-IOGROUP)")
    p.add_argument("--aggregator", default=None,
                   help="the aggregator's producer address (default: as advertised)")
    p.add_argument("--board", default="sim", help="sim | pacman:HOST[:CMD_PORT:DATA_PORT] | "
                                                  "replay:FILE")
    p.add_argument("--io-group", type=int, default=1, help="io_group of the board")
    p.add_argument("--sim-rate", type=sim_rate, default=100_000,
                   help="simulated packets per second (0: as fast as possible), or 'physics': "
                        "the rate the board's configuration gives")
    p.add_argument("--sim-pool", type=int, default=0,
                   help="pre-generate this many messages and send them in a loop (benchmarks)")
    p.add_argument("--seed", type=int, default=None, help="simulation seed (default io_group)")
    p.add_argument("--detector", default=None,
                   help="simulate this io_group of a detector: 2x2, tile, or a layout file "
                        "(default: standard v2 tiles)")
    add_beam_arguments(p, "this simulated board")
    p.add_argument("--words-per-message", type=int, default=4096)
    p.add_argument("--replay-speed", type=float, default=1.0,
                   help="replay at this multiple of real time (0: as fast as possible)")
    p.add_argument("--record", default=None,
                   help="also write every data message sent to this raw file, one per run "
                        "('{run}' in the name is replaced by the run number; an existing "
                        "file is never replaced: NAME-2.raw, NAME-3.raw, ... are taken)")
    p.add_argument("--data-dir", default="data",
                   help=f"routine results are kept in DATA_DIR/{ROUTINE_RESULTS_DIR}, the "
                        f"configuration last written to the chips (re-applied when the "
                        f"producer starts again) in DATA_DIR/{CONFIG_RECORD_DIR} "
                        "(default data)")
    add_routines_argument(p)
    p.add_argument("--hold-mb", type=float, default=DEFAULT_HOLD_BYTES / (1 << 20),
                   help="while the aggregator or storage cannot take the board's data, keep "
                        "this much in memory (MB), then spill to --spill-dir (default "
                        f"{DEFAULT_HOLD_BYTES >> 20})")
    p.add_argument("--spill-dir", default=None,
                   help="where frames that do not fit in --hold-mb wait (default DATA_DIR)")


def make_source(board: str, io_group: int, *, sim_rate: float | str = 100_000,
                seed: int | None = None,
                words_per_message: int = 4096, sim_pool: int = 0, replay_speed: float = 1.0,
                detector: str | None = None, beam: Any = None):
    """A message source from a ``--board`` value; CommandError on a bad value."""
    from larpixdaq.pipeline.sources.pacman import PacmanSource
    from larpixdaq.pipeline.sources.replay import ReplaySource
    from larpixdaq.pipeline.sources.sim import SimSource

    kind, _, rest = board.partition(":")
    if kind == "sim":
        try:
            return SimSource(io_group, rate=sim_rate, seed=io_group if seed is None else seed,
                             words_per_message=words_per_message, pool=sim_pool,
                             detector=detector, beam=beam)
        except ValueError as exc:  # a layout that cannot be used, or no such io_group in it
            raise CommandError(str(exc)) from None
    if kind == "pacman":
        host, _, ports = rest.partition(":")
        if not host:
            raise CommandError("--board pacman needs a host: pacman:HOST[:CMD_PORT:DATA_PORT]")
        try:
            cmd, data = (int(x) for x in ports.split(":")) if ports else (5555, 5556)
        except ValueError:
            raise CommandError(f"bad PACMAN ports {ports!r}: use CMD_PORT:DATA_PORT, "
                               f"e.g. 5555:5556") from None
        return PacmanSource(io_group, host, cmd, data)
    if kind == "replay":
        if not rest:
            raise CommandError("--board replay needs a file: replay:FILE")
        try:
            return ReplaySource(rest, io_group, speed=replay_speed)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from None
    raise CommandError(f"unknown board {board!r}: use sim, pacman:HOST[:PORTS] or replay:FILE")


def run_producer(args: argparse.Namespace) -> int:
    from larpixdaq.pipeline.producer import Producer
    from larpixdaq.pipeline.producer_component import ProducerComponent

    _logging()
    name = args.name or f"producer-{args.io_group}"
    source = make_source(args.board, args.io_group, sim_rate=args.sim_rate, seed=args.seed,
                         words_per_message=args.words_per_message, sim_pool=args.sim_pool,
                         detector=args.detector,
                         beam=beam_for(args, args.io_group, args.trigger_io_group
                                       if args.trigger_io_group is not None else args.io_group),
                         replay_speed=args.replay_speed)
    address = _aggregator_address(args, "aggregator_in", DEFAULT_INLET)
    producer = Producer(name, source, address, record=args.record,
                        hold_bytes=int(args.hold_mb * (1 << 20)),
                        spill_dir=args.spill_dir or args.data_dir,
                        state_dir=args.data_dir)
    print(f"producer {name}: {args.board} io_group {args.io_group} -> {address}", flush=True)
    for d in args.routines:
        if not Path(d).is_dir():
            raise CommandError(f"--routines {d}: no such directory")
    comp = ProducerComponent(name, args.core, producer, routine_dirs=args.routines,
                             keys=args.keys)
    comp.board.keep_routine_results_in(Path(args.data_dir) / ROUTINE_RESULTS_DIR)
    comp.board.keep_configuration_record_in(Path(args.data_dir) / CONFIG_RECORD_DIR)
    return _run_component(comp, "producer")


COMMANDS = [
    Command("aggregator", "run the aggregator: merges producers, lossless to storage",
            configure_aggregator, run_aggregator),
    Command("storage", "run storage: one LArPix+HDF5 file per run", configure_storage,
            run_storage),
    Command("producer", "run a producer for one board (sim, PACMAN or replay)",
            configure_producer, run_producer),
]
