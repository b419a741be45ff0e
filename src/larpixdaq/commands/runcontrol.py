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
    RUNS_DB_NAME,
    add_client_arguments,
    add_core_argument,
    add_keys_argument,
    connect_operator,
    final_reply,
    parse_assignments,
)
from larpixdaq.errors import CommandError
from larpixdaq.pipeline.addresses import DEFAULT_LOGS_BIND

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
    p.add_argument("--require-login", action="store_true",
                   help="refuse clients without a credential (default: they may read, as "
                        "viewers)")
    p.add_argument("--no-local-token", action="store_true",
                   help="do not make or keep the local user's expert token file")


def run_core(args: argparse.Namespace) -> int:
    import logging

    import zmq

    from larpixdaq.runcontrol.access import ensure_local_admin
    from larpixdaq.runcontrol.core import Core
    from larpixdaq.runcontrol.rundb import RunDatabaseError
    from larpixdaq.runcontrol.security import KeysError
    from larpixdaq.runcontrol.users import UserError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        core = Core(args.core, args.db, heartbeat_interval=args.heartbeat_interval,
                    heartbeat_timeout=args.heartbeat_timeout, ack_timeout=args.ack_timeout,
                    rejoin_grace=args.rejoin_grace, data_dir=args.data_dir, keys=args.keys,
                    require_login=args.require_login)
    except (RunDatabaseError, KeysError, UserError) as exc:
        raise CommandError(str(exc)) from None
    try:
        endpoint = core.bind()
    except zmq.ZMQError as exc:
        core.close()
        raise CommandError(f"cannot listen on {args.core}: {exc}") from None
    signal.signal(signal.SIGTERM, lambda *_: core.stop())
    local = ""
    if not args.no_local_token:
        try:
            credential, path, _ = ensure_local_admin(args.db, endpoint)
        except (UserError, OSError) as exc:
            core.close()
            raise CommandError(f"cannot make the local token file: {exc}") from None
        core.access.remember(credential.user, credential.token)
        local = f"; token of {credential.user} in {path}"
    secured = "CURVE, authorised keys only" if args.keys else "no CURVE"
    login = "login required" if args.require_login else "anonymous clients may read"
    print(f"core listening on {endpoint} (run database {args.db}; {secured}; {login}{local})",
          flush=True)
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


def interrupted_reason(signal_name: str) -> str:
    """The end reason recorded when `larpix-daq run` is interrupted by ``signal_name``."""
    how = "Ctrl-C, SIGINT" if signal_name == "SIGINT" else signal_name
    return f"ended by the operator: `larpix-daq run` interrupted ({how})"


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived while `larpix-daq run` was taking data."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise _Interrupted(signal.Signals(signum).name)




def _take_data(op, args: argparse.Namespace, started: list[int]) -> None:
    """Prepare, begin and take data for ``--duration`` s; ``started`` gets the run number
    as soon as it is known (so an interruption knows which run to end)."""
    from larpixdaq.runcontrol.operator import Timeout
    from larpixdaq.runcontrol.statemachine import State

    prepared = final_reply(op.prepare_run(args.comment, args.run_type, data_dir=args.data_dir))
    number = prepared.data.get("run_number")
    started.append(number)
    print(f"run {number} prepared", flush=True)
    final_reply(op.begin_run())
    print(f"run {number} started; taking data for {args.duration:g} s", flush=True)
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < args.duration:
        time.sleep(min(1.0, args.duration - elapsed))
        st = op.call("status", timeout=args.timeout)
        if isinstance(st, Timeout):
            print("  (no status from the core)", flush=True)
            continue
        state = st.data.get("state")
        print(f"  {time.monotonic() - t0:6.1f} s  {state}  {_packets(st.data)}", flush=True)
        for ev in op.poll_events():
            if ev.kind != "state":  # our own transitions; already shown
                print(f"  ! {ev.message}", flush=True)
        if state != State.RUN:
            break


def _open_run_after_interrupt(op, args: argparse.Namespace) -> bool:
    """Whether there is a run to end after an interruption that came before the prepare
    answered: wait for a transition under way to settle, then READY or RUN has one."""
    from larpixdaq.runcontrol.operator import Timeout
    from larpixdaq.runcontrol.statemachine import STABLE_STATES, State

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        st = op.call("status", timeout=args.timeout)
        if isinstance(st, Timeout):
            return False
        if st.data.get("state") in STABLE_STATES:
            return st.data.get("state") in (State.READY, State.RUN)
        time.sleep(0.1)
    return False


def run_run(args: argparse.Namespace) -> int:
    if args.duration < 0:
        raise CommandError("--duration must be zero or positive")
    # Ctrl-C, or a SIGTERM from whoever started us, ends the run before we exit. (A shell
    # that starts us in the background with SIGINT ignored is obeyed: not taken over.)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig, handler in before.items():
            if handler is not signal.SIG_IGN:
                signal.signal(sig, _raise_interrupted)
        return _run_and_end(args)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _run_and_end(args: argparse.Namespace) -> int:
    started: list[int] = []
    interrupted: str | None = None
    with connect_operator(args) as op:
        try:
            _take_data(op, args, started)
        except KeyboardInterrupt as exc:
            interrupted = getattr(exc, "signal_name", "SIGINT")
            # Ending is what the operator asked for: a second signal must not cut it short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(f"interrupted ({interrupted}): ending the run as ended by the operator",
                  file=sys.stderr, flush=True)
            if not started and not _open_run_after_interrupt(op, args):
                print("no run was started", file=sys.stderr)
                return 130
        final = final_reply(op.end_run(
            reason=interrupted_reason(interrupted) if interrupted else None))
    run = final.data.get("run", {})
    print(f"run {run.get('run_number')} ended: {run.get('exit_status')}"
          + (f" ({run['end_reason']})" if run.get("end_reason") else ""))
    print(f"  packets written {run.get('packets_written', 0)}, lost {run.get('packets_lost', 0)}")
    for f in run.get("files", []):
        print(f"  file {f}")
    for inc in run.get("incidents", []):
        print(f"  incident {inc}")
    if interrupted:
        return 130
    return 0 if run.get("exit_status") == "success" else 1


def configure_runs(p: argparse.ArgumentParser) -> None:
    add_client_arguments(p)
    p.add_argument("--db", default=None,
                   help="read this run database file directly instead of asking the core "
                        "(when the core does not answer, the first of $LARPIX_DAQ_DB, "
                        f"data/{RUNS_DB_NAME} and {DEFAULT_DB} that exists is read)")
    p.add_argument("--limit", type=int, default=None, help="only the most recent N runs")
    p.add_argument("--json", action="store_true", help="print the records as JSON")


def _fmt_time(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _read_runs(path: str, limit: int | None) -> list[dict[str, Any]]:
    from larpixdaq.runcontrol.rundb import RunDatabase, RunDatabaseError

    if not os.path.exists(path):
        raise CommandError(f"no run database at {path}")
    try:
        db = RunDatabase(path)
    except RunDatabaseError as exc:
        raise CommandError(str(exc)) from None
    try:
        return [r.to_dict() for r in db.list_runs(limit)]
    finally:
        db.close()


def local_run_databases() -> list[str]:
    """Where a run database of this machine may be, in the order `runs` looks: the core's
    ``$LARPIX_DAQ_DB``, then `larpix-daq up`'s ``data/``, then the core's default."""
    env = os.environ.get("LARPIX_DAQ_DB")
    return [*([env] if env else []), os.path.join("data", RUNS_DB_NAME), DEFAULT_DB]


#: How long `runs` waits for the core before reading the database itself (s).
RUNS_PING_TIMEOUT = 2.0


def run_runs(args: argparse.Namespace) -> int:
    from larpixdaq.runcontrol.operator import Timeout

    if args.db:
        runs = _read_runs(args.db, args.limit)
    else:
        with connect_operator(args) as op:
            alive = not isinstance(op.call("ping", timeout=min(args.timeout, RUNS_PING_TIMEOUT)),
                                   Timeout)
            runs = final_reply(op.runs(args.limit)).data["runs"] if alive else None
        if runs is None:
            found = [p for p in local_run_databases() if os.path.exists(p)]
            if not found:
                raise CommandError(
                    f"the core at {args.core} does not answer and there is no run database "
                    f"at {' or '.join(local_run_databases())} here; give --db FILE")
            print(f"the core at {args.core} does not answer: reading the run database "
                  f"{found[0]} directly (what the core last recorded)", file=sys.stderr)
            runs = _read_runs(found[0], args.limit)
    if args.json:
        print(json.dumps(runs, indent=2, sort_keys=True))
        return 0
    print(f"{'run':>5}  {'start':<19}  {'end':<19}  {'status':<8} {'type':<10} "
          f"{'written':>9} {'lost':>6}  files")
    for r in runs:
        print(f"{r['run_number']:>5}  {_fmt_time(r['start_time']):<19}  "
              f"{_fmt_time(r['end_time']):<19}  {r['exit_status'] or r['state']:<8} "
              f"{r['run_type']:<10} {r['packets_written']:>9} {r['packets_lost']:>6}  "
              f"{' '.join(r['files'])}"
              + (f"  ({r['end_reason']})" if r.get("end_reason") else ""))
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
    p.add_argument("--bind", default=DEFAULT_LOGS_BIND, help="where to receive log records")
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
