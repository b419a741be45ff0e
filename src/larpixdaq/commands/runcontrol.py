"""Run-control commands: `core`, `status`, `prepare`, `begin`, `end`, `reset`, `run`, `runs`,
`invoke`, `logs`.

Every command except `core`, `logs` and `runs --db` is a thin use of the :class:`Operator`, so
the command line has exactly the powers of the Python API and no others.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from larpixdaq.commands import Command
from larpixdaq.commands.common import (
    add_client_arguments,
    add_core_argument,
    add_keys_argument,
    connect_operator,
    final_reply,
    parse_assignments,
)
from larpixdaq.errors import CommandError

DEFAULT_DB = "larpix-runs.sqlite"


# --- core --------------------------------------------------------------------------------


def configure_core(p: argparse.ArgumentParser) -> None:
    add_core_argument(p)
    add_keys_argument(p, "admit only the clients in DIR/authorized")
    p.add_argument("--db", default=os.environ.get("LARPIX_DAQ_DB", DEFAULT_DB),
                   help=f"run database file (default: $LARPIX_DAQ_DB or {DEFAULT_DB})")
    p.add_argument("--data-dir", default=".", help="where components should write run files")
    p.add_argument("--heartbeat-interval", type=float, default=0.2)
    p.add_argument("--heartbeat-timeout", type=float, default=0.8,
                   help="silence after which a component is declared lost (s)")
    p.add_argument("--ack-timeout", type=float, default=5.0,
                   help="time each group of components has to acknowledge a transition (s)")
    p.add_argument("--rejoin-grace", type=float, default=3.0,
                   help="time for a run's components to register again after a core restart "
                        "or after one is lost (s); 0: ERROR at once")


def run_core(args: argparse.Namespace) -> int:
    import logging

    import zmq

    from larpixdaq.runcontrol.core import Core
    from larpixdaq.runcontrol.rundb import RunDatabaseError
    from larpixdaq.runcontrol.security import KeysError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        core = Core(args.core, args.db, heartbeat_interval=args.heartbeat_interval,
                    heartbeat_timeout=args.heartbeat_timeout, ack_timeout=args.ack_timeout,
                    rejoin_grace=args.rejoin_grace, data_dir=args.data_dir, keys=args.keys)
    except (RunDatabaseError, KeysError) as exc:
        raise CommandError(str(exc)) from None
    try:
        endpoint = core.bind()
    except zmq.ZMQError as exc:
        core.close()
        raise CommandError(f"cannot listen on {args.core}: {exc}") from None
    signal.signal(signal.SIGTERM, lambda *_: core.stop())
    secured = "CURVE, authorised keys only" if args.keys else "no authentication"
    print(f"core listening on {endpoint} (run database {args.db}; {secured})", flush=True)
    try:
        core.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        core.close()
    return 0


# --- talking to the core -----------------------------------------------------------------


def configure_status(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument("--json", action="store_true", help="print the full status as JSON")


def run_status(args: argparse.Namespace) -> int:
    with connect_operator(args) as op:
        final = final_reply(op.status())
    st = final.data
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return 0
    run = st.get("run")
    print(f"state: {st['state']}" + (f"   run {run['run_number']} ({run['run_type']})"
                                      if run else ""))
    print(f"allowed: {', '.join(st['allowed']) or 'none'}")
    for inc in st.get("incidents", []):
        print(f"incident: {inc}")
    print(f"components: {len(st['components'])}")
    for c in st["components"]:
        counters = " ".join(f"{k}={v}" for k, v in sorted(c["counters"].items()))
        print(f"  {c['name']:<16} {c['role']:<11} {c['state']:<6} {c['host']}:{c['pid']}"
              f"  {counters}")
    return 0


def configure_prepare(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument("--comment", default="", help="operator comment stored with the run")
    p.add_argument("--run-type", default="physics", help="run type (default physics)")
    p.add_argument("--data-dir", default=None, help="where components write run files")


def run_prepare(args: argparse.Namespace) -> int:
    with connect_operator(args) as op:
        final = final_reply(op.prepare_run(args.comment, args.run_type, data_dir=args.data_dir))
    print(final.message)
    return 0


def _simple(command: str):
    def run(args: argparse.Namespace) -> int:
        with connect_operator(args) as op:
            final = final_reply(op.request(command))
        print(final.message)
        return 0
    return run


def configure_run(p: argparse.ArgumentParser) -> None:
    configure_prepare(p)
    p.add_argument("--duration", type=float, required=True, help="seconds of data taking")


def _packets(status: dict[str, Any]) -> str:
    totals: dict[str, float] = {}
    for c in status.get("components", []):
        for key in ("packets_received", "packets_written", "packets_lost"):
            if key in c["counters"]:
                totals[key] = totals.get(key, 0) + c["counters"][key]
    return " ".join(f"{k}={v:g}" for k, v in totals.items())


def run_run(args: argparse.Namespace) -> int:
    from larpixdaq.runcontrol.operator import Timeout

    if args.duration < 0:
        raise CommandError("--duration must be zero or positive")
    with connect_operator(args) as op:
        prepared = final_reply(op.prepare_run(args.comment, args.run_type, data_dir=args.data_dir))
        number = prepared.data.get("run_number")
        print(f"run {number} prepared")
        try:
            final_reply(op.begin_run())
            print(f"run {number} started; taking data for {args.duration:g} s")
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < args.duration:
                time.sleep(min(1.0, args.duration - elapsed))
                st = op.call("status", timeout=args.timeout)
                if isinstance(st, Timeout):
                    print("  (no status from the core)", flush=True)
                    continue
                state = st.data.get("state")
                print(f"  {time.monotonic() - t0:6.1f} s  {state}  {_packets(st.data)}",
                      flush=True)
                for ev in op.poll_events():
                    if ev.kind != "state":  # our own transitions; already shown
                        print(f"  ! {ev.message}", flush=True)
                if state != "RUN":
                    break
        except KeyboardInterrupt:
            print("interrupted: ending the run", file=sys.stderr)
        final = final_reply(op.end_run())
    run = final.data.get("run", {})
    print(f"run {run.get('run_number')} ended: {run.get('exit_status')}")
    print(f"  packets written {run.get('packets_written', 0)}, lost {run.get('packets_lost', 0)}")
    for f in run.get("files", []):
        print(f"  file {f}")
    for inc in run.get("incidents", []):
        print(f"  incident {inc}")
    return 0 if run.get("exit_status") == "success" else 1


def configure_runs(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument("--db", default=None,
                   help="read this run database file directly instead of asking the core")
    p.add_argument("--limit", type=int, default=None, help="only the most recent N runs")
    p.add_argument("--json", action="store_true", help="print the records as JSON")


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def run_runs(args: argparse.Namespace) -> int:
    if args.db:
        from larpixdaq.runcontrol.rundb import RunDatabase, RunDatabaseError

        if not os.path.exists(args.db):
            raise CommandError(f"no run database at {args.db}")
        try:
            db = RunDatabase(args.db)
        except RunDatabaseError as exc:
            raise CommandError(str(exc)) from None
        runs = [r.to_dict() for r in db.list_runs(args.limit)]
        db.close()
    else:
        with connect_operator(args) as op:
            runs = final_reply(op.runs(args.limit)).data["runs"]
    if args.json:
        print(json.dumps(runs, indent=2, sort_keys=True))
        return 0
    print(f"{'run':>5}  {'start':<19}  {'end':<19}  {'status':<8} {'type':<10} "
          f"{'written':>9} {'lost':>6}  files")
    for r in runs:
        print(f"{r['run_number']:>5}  {_fmt_time(r['start_time']):<19}  "
              f"{_fmt_time(r['end_time']):<19}  {r['exit_status'] or r['state']:<8} "
              f"{r['run_type']:<10} {r['packets_written']:>9} {r['packets_lost']:>6}  "
              f"{' '.join(r['files'])}")
    return 0


def configure_invoke(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument("component")
    p.add_argument("action")
    p.add_argument("params", nargs="*", metavar="NAME=VALUE",
                   help="parameters; values are read as JSON when they parse, else as text")


def run_invoke(args: argparse.Namespace) -> int:
    params = parse_assignments(args.params)
    with connect_operator(args) as op:
        final = final_reply(op.invoke(args.component, args.action, **params))
    print(final.message)
    if final.data:
        print(json.dumps(final.data, indent=2, sort_keys=True, default=str))
    return 0


COMMANDS = [
    Command("core", "run the run-control core (state, run numbers, components)",
            configure_core, run_core),
    Command("status", "show the DAQ state, the run and the components", configure_status,
            run_status),
    Command("prepare", "prepare a run (STOP -> READY)", configure_prepare, run_prepare),
    Command("begin", "begin data taking (READY -> RUN)", add_client_arguments,
            _simple("begin_run")),
    Command("end", "end the run (RUN or READY -> STOP)", add_client_arguments, _simple("end_run")),
    Command("reset", "leave ERROR for STOP, closing any open run", add_client_arguments,
            _simple("reset")),
    Command("run", "prepare, begin, take data for --duration seconds, end, print the summary",
            configure_run, run_run),
    Command("runs", "list the runs in the run database", configure_runs, run_runs),
    Command("invoke", "run an action a component offers", configure_invoke, run_invoke),
]


def configure_logs(p: argparse.ArgumentParser) -> None:
    add_core_argument(p)
    add_keys_argument(p, "to talk to the core")
    p.add_argument("--bind", default="tcp://*:5551", help="where to receive log records")
    p.add_argument("--file", default="larpix-daq.log", help="JSON-lines log file to append to")
    p.add_argument("--name", default="logs", help="component name (unique in the DAQ)")
    p.add_argument("--quiet", action="store_true", help="do not print records on the console")


def run_logs(args: argparse.Namespace) -> int:
    import zmq

    from larpixdaq.pipeline.logcollector import LogCollector
    from larpixdaq.runcontrol.component import ComponentError
    from larpixdaq.runcontrol.security import KeysError

    try:
        collector = LogCollector(args.name, args.core, bind=args.bind, path=args.file,
                                 console=None if args.quiet else sys.stdout, keys=args.keys)
    except zmq.ZMQError as exc:
        raise CommandError(f"cannot listen on {args.bind}: {exc}") from None
    except KeysError as exc:
        raise CommandError(str(exc)) from None
    print(f"log collector {args.name} on {collector.endpoint}, writing {args.file}", flush=True)
    try:
        collector.run_forever()
    except ComponentError as exc:
        raise CommandError(str(exc)) from None
    return 0


COMMANDS.append(Command("logs", "run the log collector: every component's log to a file and "
                                "the console", configure_logs, run_logs))


def configure_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", help="key directory (created if missing)")
    p.add_argument("--name", default="client",
                   help="client key pair to create and authorise (default client)")


def run_keys(args: argparse.Namespace) -> int:
    from larpixdaq.runcontrol.security import KeysError, create_keys

    try:
        public = create_keys(args.directory, args.name)
    except KeysError as exc:
        raise CommandError(str(exc)) from None
    print(f"core key pair in {args.directory}; client {args.name!r} authorised ({public})")
    return 0


COMMANDS.append(Command("keys", "create CURVE keys so that only authorised clients reach the "
                                "core", configure_keys, run_keys))
