"""`larpix-daq up`: the whole DAQ on this machine under one supervisor.

Before it starts anything, `up` makes sure it is the only DAQ here: it holds a lock file in
the data directory (``up.lock``, naming its pid) and checks that every port it is to serve
is free; a second `up` refuses at once and starts nothing, so none of its components can
register with the first DAQ. It then closes a run that a previous DAQ left open when it
stopped without ending it (:mod:`larpixdaq.pipeline.interrupted`), so the core starts in
STOP rather than silently taking data into that run again. On Ctrl-C, SIGTERM or SIGHUP it
ends the run in progress (the operator's reason: the DAQ shut down) before it stops the
components.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from larpixdaq.commands import Command, discover_commands
from larpixdaq.commands.common import (
    DEFAULT_CORE,
    RUNS_DB_NAME,
    add_beam_arguments,
    add_core_argument,
    add_keys_argument,
    add_no_sync_argument,
    add_routines_argument,
    beam_options,
    sim_rate,
)
from larpixdaq.errors import CommandError
from larpixdaq.pipeline.addresses import INLET_OFFSET, LOGS_OFFSET, MONITOR_OFFSET, OUTLET_OFFSET


def configure(p: argparse.ArgumentParser) -> None:
    add_core_argument(p, help=f"address the core listens on (default: $LARPIX_DAQ_CORE or "
                              f"{DEFAULT_CORE}); the data path uses the next ports")
    p.add_argument("--data-dir", default="data", help="run files, run database and log")
    add_keys_argument(p, "every process then admits and uses only its keys; "
                         "`larpix-daq keys DIR` makes them")
    p.add_argument("--board", action="append", default=None,
                   help="sim | pacman:HOST[:CMD_PORT:DATA_PORT] | replay:FILE; repeat for "
                        "several boards (io_group 1, 2, ...); default one sim board")
    p.add_argument("--detector", default=None,
                   help="simulate a whole detector: 2x2 (8 boards x 8 tiles, io_groups 1-8), "
                        "tile, or a layout file; one sim board per io_group unless --board "
                        "is given")
    p.add_argument("--sim-rate", type=sim_rate, default=100_000,
                   help="packets per second of each simulated board (0: as fast as possible), "
                        "or 'physics': the rate the board's configuration gives")
    p.add_argument("--replay-speed", type=float, default=1.0,
                   help="replay at this multiple of real time (0: as fast as possible)")
    p.add_argument("--part-mb", type=float, default=4096, help="run file part size (MB)")
    add_no_sync_argument(p)
    p.add_argument("--rejoin-grace", type=float, default=None,
                   help="seconds a transition waits for a lost run member to register again "
                        "(the core's --rejoin-grace; a steady run waits for it as long as it "
                        "takes)")
    p.add_argument("--hold-mb", type=float, default=None,
                   help="each producer keeps this much in memory while the data path cannot "
                        "take its board's data, then spills to --spill-dir (producer default)")
    p.add_argument("--spill-dir", default=None,
                   help="where producers spill what they cannot hold (default the data dir)")
    add_beam_arguments(p, "the simulated boards")
    add_routines_argument(p)
    p.add_argument("--no-web", action="store_true", help="do not start the web UI")
    p.add_argument("--web-port", type=int, default=8080, help="port of the web UI (default 8080)")


def _host_port(address: str) -> tuple[str, int]:
    try:
        scheme, rest = address.split("://", 1)
        host, port = rest.rsplit(":", 1)
        if scheme != "tcp":
            raise ValueError
        return host, int(port)
    except ValueError:
        raise CommandError(f"--core must look like tcp://HOST:PORT, not {address!r}") from None


#: The lock file in the data directory that makes one `up` per data directory.
UP_LOCK_NAME = "up.lock"

#: How long `up` waits for the run to end when it is stopped (s): the end waits for a missing
#: component's rejoin grace and each group's ack time-out.
END_TIMEOUT = 60.0


def shutdown_reason(signal_name: str) -> str:
    """The end reason recorded for a run ended because `up` was stopped by ``signal_name``."""
    how = {"SIGINT": "Ctrl-C, SIGINT", "SIGHUP": "its terminal closed, SIGHUP"}.get(
        signal_name, signal_name)
    return f"DAQ shut down by the operator: `larpix-daq up` stopped ({how})"


def claim(data: Path) -> IO[str]:
    """Take the data directory's `up` lock (kept for the life of the returned file); a
    CommandError naming the holder's pid if another `up` has it."""
    from larpixdaq.processes import LockHeld, take_pid_lock

    path = data / UP_LOCK_NAME
    try:
        return take_pid_lock(path)
    except LockHeld as held:
        raise CommandError(
            f"another larpix-daq up (pid {held.holder}) is running with data directory "
            f"{data} (lock {path}); stop it first (Ctrl-C there, or kill {held.holder}). "
            "Nothing was started") from None


def check_ports(ports: dict[str, tuple[str, int]]) -> None:
    """Refuse (CommandError, in one line) if any of ``ports`` ({what: (host, port)}) is in
    use: another DAQ (or another program) is serving there."""
    for what, (host, port) in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as ZeroMQ binds: a port left in TIME_WAIT by a stopped DAQ is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                raise CommandError(
                    f"the {what} port {host}:{port} is in use ({exc.strerror}): another DAQ "
                    "is running here (`larpix-daq status` asks it), or another program has "
                    "the port; choose other ports with --core/--web-port. Nothing was "
                    "started") from None


def _ports(args: argparse.Namespace) -> dict[str, tuple[str, int]]:
    host, port = _host_port(args.core)
    bind_host = "127.0.0.1" if host in ("localhost", "127.0.0.1") else host
    bind_host = "0.0.0.0" if bind_host == "*" else bind_host
    ports = {"core": (bind_host, port), "log collector": (bind_host, port + LOGS_OFFSET),
             "aggregator inlet": (bind_host, port + INLET_OFFSET),
             "aggregator outlet": (bind_host, port + OUTLET_OFFSET),
             "monitor": (bind_host, port + MONITOR_OFFSET)}
    if not args.no_web:
        ports["web"] = ("127.0.0.1", args.web_port)
    return ports


def close_interrupted(args: argparse.Namespace) -> str | None:
    """Close a run the previous DAQ left open (see the module docstring); the line to say."""
    from larpixdaq.pipeline.interrupted import close_interrupted_run
    from larpixdaq.runcontrol.rundb import RunDatabaseError

    data = Path(args.data_dir)
    try:
        closed = close_interrupted_run(data / RUNS_DB_NAME, data)
    except RunDatabaseError as exc:
        raise CommandError(f"{exc}. Nothing was started") from None
    return None if closed is None else f"[up] {closed.describe()}"


def end_run_first(core: str, say: Any, timeout: float = END_TIMEOUT) -> Any:
    """A ``before_stop`` for the supervisor: end the open run, if any, while every component
    is still there, with the reason :func:`shutdown_reason` gives."""
    def end(why: str) -> None:
        from larpixdaq.runcontrol.operator import Operator, Timeout
        from larpixdaq.runcontrol.statemachine import STABLE_STATES, State

        with Operator(core, timeout=timeout, kind="up") as op:
            deadline = time.monotonic() + timeout
            while True:  # a transition under way settles first
                st = op.call("status", timeout=5.0)
                if isinstance(st, Timeout) or not st.success:
                    say(f"[up] the core did not answer; an open run is left to the next "
                        f"start ({getattr(st, 'message', '')})")
                    return
                state = st.data.get("state")
                if state in STABLE_STATES or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if state not in (State.READY, State.RUN, State.ERROR):
                return
            number = (st.data.get("run") or {}).get("run_number")
            say(f"[up] {why}: ending run {number} before stopping the DAQ")
            final = op.end_run(reason=shutdown_reason(why), timeout=timeout).wait()
            if isinstance(final, Timeout) or not final.success:
                say(f"[up] run {number} did not end: {final.message}")
                return
            run = final.data.get("run", {})
            say(f"[up] {final.message}; {run.get('packets_written', 0)} packets written"
                + "".join(f"\n[up]   file {f}" for f in run.get("files", [])))
    return end


def _has_command(name: str) -> bool:
    return any(c.name == name for c in discover_commands())


def build(args: argparse.Namespace):
    """The supervisor with every child the options ask for (not started)."""
    from larpixdaq.supervisor import Supervisor

    host, port = _host_port(args.core)
    bind_host = "127.0.0.1" if host in ("localhost", "127.0.0.1") else host
    addr = lambda offset: f"tcp://{bind_host}:{port + offset}"  # noqa: E731
    logs, inlet = addr(LOGS_OFFSET), addr(INLET_OFFSET)
    outlet, monitor = addr(OUTLET_OFFSET), addr(MONITOR_OFFSET)
    data = Path(args.data_dir)
    try:
        data.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot use data directory {data}: {exc.strerror}") from None
    io_groups: list[int] = []
    if args.detector is not None:
        from larpixdaq.geometry import LayoutError, load_detector

        try:
            io_groups = load_detector(args.detector).io_groups
        except LayoutError as exc:
            raise CommandError(str(exc)) from None
    boards = args.board or ["sim"] * max(len(io_groups), 1)
    for board in boards:
        kind, _, rest = board.partition(":")
        if kind not in ("sim", "pacman", "replay") or (kind != "sim" and not rest):
            raise CommandError(f"unknown board {board!r}: use sim, pacman:HOST[:PORTS] or "
                               f"replay:FILE")
        if kind == "replay" and not Path(rest).is_file():
            raise CommandError(f"replay file {rest} does not exist")
    groups = [io_groups[i - 1] if i <= len(io_groups) else i for i in range(1, len(boards) + 1)]
    trigger = args.trigger_io_group if args.trigger_io_group is not None else min(groups)
    if args.beam and trigger not in groups:
        raise CommandError(f"--trigger-io-group {trigger}: no board serves it (io_groups "
                           f"{', '.join(map(str, groups))})")
    beam = beam_options(args, trigger)
    core = ["--core", args.core]
    sup = Supervisor()
    grace = [] if args.rejoin_grace is None else ["--rejoin-grace", str(args.rejoin_grace)]
    hold = [] if args.hold_mb is None else ["--hold-mb", str(args.hold_mb)]
    hold += [] if args.spill_dir is None else ["--spill-dir", str(args.spill_dir)]
    no_sync = ["--no-sync"] if args.no_sync else []
    sup.add("core", ["core", *core, "--db", str(data / RUNS_DB_NAME), "--data-dir", str(data),
                     *grace])
    sup.add("logs", ["logs", *core, "--bind", logs, "--file", str(data / "larpix-daq.log"),
                     "--quiet"])
    sup.add("aggregator", ["aggregator", *core, "--inlet", inlet, "--outlet", outlet,
                           "--monitor", monitor])
    sup.add("storage", ["storage", *core, "--aggregator", outlet, "--data-dir", str(data),
                        "--part-mb", str(args.part_mb), *no_sync])
    # with a detector, board k serves its k-th io_group (then 1, 2, ... beyond them)
    for group, board in zip(groups, boards, strict=True):
        detector = ["--detector", args.detector] if args.detector and board == "sim" else []
        sim = beam if board == "sim" else []
        sup.add(f"producer-{group}", ["producer", *core, "--aggregator", inlet, "--board",
                                      board, "--io-group", str(group), "--sim-rate",
                                      str(args.sim_rate), "--replay-speed",
                                      str(args.replay_speed), "--data-dir", str(data),
                                      *detector, *sim, *hold,
                                      *(x for d in args.routines for x in ("--routines", d))])
    if _has_command("monitor"):
        detector = ["--detector", args.detector] if args.detector else []
        sup.add("monitor", ["monitor", *core, "--aggregator", monitor, *detector])
    if not args.no_web and _has_command("web") and importlib.util.find_spec("larpixdaq.web.app"):
        sup.add("web", ["web", *core, "--port", str(args.web_port)])
    return sup


def local_login(args: argparse.Namespace) -> tuple[str, str]:
    """Make (or keep) the local user's expert token for this DAQ; returns the line that says
    where the token file is and the page's login link (the link holds the token, as
    Jupyter's does: it is printed only to the person who started the DAQ)."""
    from urllib.parse import quote

    from larpixdaq.runcontrol.access import ensure_local_admin
    from larpixdaq.runcontrol.users import UserError

    try:
        credential, path, _ = ensure_local_admin(Path(args.data_dir) / RUNS_DB_NAME, args.core)
    except (UserError, OSError) as exc:
        raise CommandError(f"cannot make the local token file: {exc}") from None
    host, _ = _host_port(args.core)
    web_host = "127.0.0.1" if host in ("localhost", "127.0.0.1", "0.0.0.0", "*") else host
    link = (f"http://{web_host}:{args.web_port}/login?user={quote(credential.user)}"
            f"&token={quote(credential.token)}")
    return (f"[up] {credential.user} may do everything here: token in {path} (only you can "
            "read it; the command line uses it)"), link


def run(args: argparse.Namespace) -> int:
    if args.keys:
        # Every child (core, aggregator, log collector as servers; the rest as clients) and
        # this process's own operator take the keys from the environment.
        os.environ["LARPIX_DAQ_KEYS"] = str(Path(args.keys).resolve())
    sup = build(args)
    lock = claim(Path(args.data_dir))
    try:
        check_ports(_ports(args))
        closed = close_interrupted(args)
        sup.before_stop = end_run_first(args.core, sup.say)
        if closed:
            sup.say(closed)
        return _run(args, sup)
    finally:
        with contextlib.suppress(OSError):
            lock.close()


def _run(args: argparse.Namespace, sup: Any) -> int:
    where, link = local_login(args)
    sup.say(where)
    if any(c.name == "web" for c in sup.children):
        sup.say(f"[up] the page, logged in as you: {link}")
    sup.say(f"[up] starting {', '.join(c.name for c in sup.children)}; Ctrl-C ends the run "
            "and stops everything")
    try:
        sup.run()
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None
    return 0


COMMANDS = [Command("up", "start the whole DAQ here (core, data path, monitor, web) and keep "
                          "it running", configure, run)]
