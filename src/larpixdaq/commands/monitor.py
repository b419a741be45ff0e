"""`larpix-daq monitor`: the online monitor as a component of its own."""

from __future__ import annotations

import argparse
import logging
import sys

from larpixdaq.commands import Command
from larpixdaq.commands.common import add_core_argument, add_keys_argument
from larpixdaq.errors import CommandError


def configure(p: argparse.ArgumentParser) -> None:
    add_core_argument(p)
    add_keys_argument(p, "for a core that demands keys")
    p.add_argument("--name", default="monitor", help="component name")
    p.add_argument("--aggregator", default=None,
                   help="the aggregator's monitor address (default: as advertised to the core)")
    p.add_argument("--publish", default="tcp://127.0.0.1:0",
                   help="where to publish snapshots ('' for nowhere; port 0 picks one)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots")
    p.add_argument("--detector", default=None,
                   help="the detector's layout (2x2, tile or a layout file): which tile each "
                        "UART feeds, where tiles are (default: standard v2 tiles)")


def run(args: argparse.Namespace) -> int:
    import zmq

    from larpixdaq.pipeline.monitor import MonitorComponent
    from larpixdaq.runcontrol.component import ComponentError
    from larpixdaq.runcontrol.security import KeysError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.interval <= 0:
        raise CommandError("--interval must be positive")
    detector = None
    if args.detector is not None:
        from larpixdaq.geometry import LayoutError, load_detector

        try:
            detector = load_detector(args.detector)
        except LayoutError as exc:
            raise CommandError(str(exc)) from None
    try:
        comp = MonitorComponent(args.name, args.core, source=args.aggregator,
                                publish=args.publish or None, interval=args.interval,
                                keys=args.keys, detector=detector)
    except zmq.ZMQError as exc:
        raise CommandError(f"monitor cannot publish on {args.publish}: {exc}") from None
    except KeysError as exc:
        raise CommandError(str(exc)) from None
    source = args.aggregator or "the aggregator advertised by the core"
    print(f"monitor {args.name}: frames from {source}, snapshots on "
          f"{comp.publish_address or 'no socket'} and through the core", flush=True)
    try:
        comp.run_forever()
    except ComponentError as exc:
        raise CommandError(str(exc)) from None
    return 0


COMMANDS = [Command("monitor", "run the online monitor (rates, hit map, ADC, alarms)",
                    configure, run)]
