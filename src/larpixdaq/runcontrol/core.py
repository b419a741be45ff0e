"""The core: knows every component, holds the run state, hands out run numbers, routes commands.

One ZeroMQ ROUTER socket serves both components and operators (each connects a DEALER); the
first message of a peer says which it is (``register`` for a component, ``command`` for an
operator). One socket keeps one event loop, one port to open in a firewall, and one ordering
of everything the core sees. The loop is single-threaded: the state machine
(:mod:`.statemachine`) decides, this module only moves messages and keeps time.

What the loop does, every turn:

* reads messages; a message that does not decode is counted and ignored, never fatal;
* sends heartbeats to components and declares lost any component silent for longer than
  ``heartbeat_timeout`` (default 0.8 s, so a loss is noticed within 1 s);
* advances the transition in progress group by group (see
  :func:`.statemachine.transition_groups`) and fails it, naming the silent components, when a
  group does not acknowledge within ``ack_timeout``;
* brings components that are not in the core's state (late joiners, replacements) to it.

A component lost (or leaving) during a run is an incident on the run, but the run is held for
``rejoin_grace`` seconds rather than put in ERROR at once: a component of the same name and
role that registers within that time takes the lost one's place, is brought to the run's state,
and the incident is marked resolved. Only when the grace runs out does the state go to ERROR.
The data path is built for this (storage resumes its run and nothing upstream is dropped
until storage has it on disk), so a restarted storage costs no data and need not fail the run.

Every state change is saved in the run database first, so a core that is killed and started
again finds the run in progress, waits ``rejoin_grace`` seconds for its components to register
again, and carries on.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.addresses import DEFAULT_CORE
from larpixdaq.runcontrol.rundb import RunDatabase, RunDatabaseError
from larpixdaq.runcontrol.security import ServerKeys
from larpixdaq.runcontrol.statemachine import (
    COMPONENT_STATE_AFTER,
    COMPONENT_TRANSITION,
    RUN_OPEN_STATES,
    TRANSITION_TARGET,
    Completed,
    Failed,
    Fault,
    RunStateMachine,
    State,
    TransitionRefused,
    catch_up_steps,
    run_exit_status,
    run_losses,
    transition_groups,
)

log = logging.getLogger("larpixdaq.core")

OPERATOR_TTL = 600.0
#: How long a process replaced by a newer one of the same name stays refused (it is told to
#: stop when it next speaks; after this its host/pid pair may belong to someone else).
SUPERSEDED_TTL = 60.0
_TRANSITION_REQUESTS = ("prepare_run", "begin_run", "end_run", "reset")
_PREPARE_PARAMS = ("comment", "run_type", "data_dir", "config_hash", "config_snapshot")


@dataclass
class _Component:
    name: str
    role: str
    host: str
    pid: int
    identity: bytes
    actions: dict[str, Any]
    counter_names: list[str]
    endpoints: dict[str, Any]
    state: str
    run_number: int | None
    last_seen: float
    counters: dict[str, Any] = field(default_factory=dict)
    busy: str | None = None  # request id of the transition it is carrying out
    catch_up: list[str] = field(default_factory=list)

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role, "host": self.host, "pid": self.pid,
            "state": self.state, "run_number": self.run_number, "counters": self.counters,
            "actions": sorted(self.actions), "endpoints": self.endpoints,
            "last_seen_s": round(now - self.last_seen, 3),
        }


@dataclass
class _Missing:
    """A run participant that is gone and may still register again until ``deadline``."""

    name: str
    role: str
    since: float
    deadline: float
    incident: int | None  # index of its incident on the run; None: absent since a core restart
    what: str  # "lost", "left", "restarted" or "absent after the core restarted"

    def summary(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "what": self.what,
                "missing_s": round(now - self.since, 3),
                "remaining_s": round(max(0.0, self.deadline - now), 3)}


@dataclass
class _Transition:
    request: str
    transition: str
    operator: tuple[bytes, str] | None
    groups: list[list[str]]
    started: float
    previous: State
    index: int = -1
    waiting: dict[str, str] = field(default_factory=dict)  # request id -> component
    deadline: float = 0.0
    failures: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    rejoining: set[str] = field(default_factory=set)  # members of this group still missing
    rejoined: set[str] = field(default_factory=set)  # members to bring with catch-up steps
    step_of: dict[str, str] = field(default_factory=dict)  # request id -> catch-up step
    reason: str = ""  # why the operator ends the run (end_run's `reason`), kept with the run


@dataclass
class _Invoke:
    operator: tuple[bytes, str]
    component: str
    action: str
    deadline: float


class Core:
    """The run-control core. Construct, :meth:`bind`, then :meth:`serve_forever`."""

    def __init__(
        self,
        address: str = DEFAULT_CORE,
        db_path: str | Path = "larpix-runs.sqlite",
        *,
        heartbeat_interval: float = 0.2,
        heartbeat_timeout: float = 0.8,
        ack_timeout: float = 5.0,
        rejoin_grace: float = 3.0,
        data_dir: str = ".",
        forward_logs: bool = True,
        keys: str | Path | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.address = address
        self._server_keys = ServerKeys(keys) if keys else None
        self.forward_logs = forward_logs
        self._log_address: str | None = None
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.ack_timeout = ack_timeout
        self.rejoin_grace = rejoin_grace
        self.data_dir = data_dir
        self.db = RunDatabase(db_path, exclusive=True)
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.components: dict[str, _Component] = {}
        self._by_identity: dict[bytes, str] = {}
        self._operators: dict[bytes, float] = {}
        self._transition: _Transition | None = None
        self._steps: dict[str, tuple[str, str, float]] = {}  # id -> (component, transition, dl)
        self._invokes: dict[str, _Invoke] = {}
        self._missing: dict[str, _Missing] = {}
        self._superseded: dict[tuple[str, str, int], tuple[int, float]] = {}
        self._ids = itertools.count(1)
        self._instance = uuid.uuid4().hex[:12]
        self._next_heartbeat = 0.0
        self.counters = {"malformed_messages": 0, "unexpected_messages": 0, "late_replies": 0,
                         "components_lost": 0, "components_rejoined": 0,
                         "components_replaced": 0, "internal_errors": 0, "messages_unsent": 0}
        self.last_malformed = ""
        self._run_failed = False
        self._stop = threading.Event()
        self._recover()

    # --- start-up and recovery ----------------------------------------------------------

    def _recover(self) -> None:
        """Take the state and the open run from the database (a restarted core carries on)."""
        self.run: m.RunInfo | None = None
        record = self.db.open_run()
        if record is None:
            self.sm = RunStateMachine(State.STOP)
            self.db.save_core_state(str(State.STOP), None)
            return
        self.run = m.RunInfo(
            run_number=record.run_number, run_type=record.run_type, comment=record.comment,
            data_dir=record.data_dir, start_time=record.start_time,
            config_hash=record.config_hash,
        )
        saved = State(record.state) if record.state in State.__members__ else State.ERROR
        if saved in (State.READY, State.RUN, State.ERROR):
            self.sm = RunStateMachine(saved)
        else:
            self.sm = RunStateMachine(State.ERROR)
            self.db.add_incident(record.run_number, f"core restarted during {saved}")
        self._run_failed = saved is State.ERROR or bool(record.incidents)
        self._persist()
        now = time.monotonic()
        for name, role in record.participants.items():
            self._missing[name] = _Missing(name, role, now, now + self.rejoin_grace, None,
                                           "absent after the core restarted")
        log.warning("recovered run %d in state %s", record.run_number, self.sm.state)

    def bind(self) -> str:
        """Bind the ROUTER socket; returns the actual endpoint (port 0 or * picks a free one)."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # A message for a peer that is gone or not reading raises instead of vanishing, so
        # _send can count it.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if self._server_keys is not None:
            self._server_keys.apply(sock, self._ctx)
        address = self.address
        if address.startswith("tcp://") and address.endswith(":0"):
            address = address[:-2] + ":*"
        sock.bind(address)
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return self.endpoint

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return (thread-safe)."""
        self._stop.set()

    def close(self) -> None:
        if self._log_address is not None:
            from larpixdaq.runcontrol import logforward

            logforward.uninstall_forwarding(self._log_address, logger="larpixdaq.core")
            self._log_address = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
        if self._server_keys is not None:
            self._server_keys.close()
        self.db.close()

    def serve_forever(self) -> None:
        if self._sock is None:
            self.bind()
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        if self.run is not None:
            self._event("recovered", f"core recovered run {self.run.run_number} in state "
                        f"{self.sm.state}", {"run_number": self.run.run_number})
        while not self._stop.is_set():
            timeout = max(0.0, min(self._next_deadline() - time.monotonic(), 0.05))
            if poller.poll(timeout * 1000):
                for _ in range(1000):
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_frames(frames)
            self._tick(time.monotonic())

    def _next_deadline(self) -> float:
        deadlines = [self._next_heartbeat]
        if self._transition is not None and self._transition.waiting:
            deadlines.append(self._transition.deadline)
        deadlines.extend(x.deadline for x in self._missing.values())
        return min(deadlines)

    # --- sending --------------------------------------------------------------------------

    def _send(self, identity: bytes, msg: m.Message) -> None:
        try:
            self._sock.send_multipart([identity, m.encode(msg)], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["messages_unsent"] += 1
            log.warning("dropped a message (%s) to a peer that is not reading", msg.TYPE)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            self.counters["messages_unsent"] += 1
            log.info("dropped a message (%s) to a peer that has gone", msg.TYPE)

    def _new_id(self) -> str:
        # Unique across restarts: a reply meant for a previous core's request never matches.
        return f"{self._instance}-{next(self._ids)}"

    def _event(self, kind: str, message: str, data: dict | None = None) -> None:
        """Tell every operator heard from recently; also logged."""
        log.info("%s: %s", kind, message)
        now = time.monotonic()
        ev = m.Event(kind=kind, message=message, data=data or {}, time=time.time())
        for identity, seen in list(self._operators.items()):
            if now - seen > OPERATOR_TTL:
                del self._operators[identity]
            else:
                self._send(identity, ev)

    def _persist(self) -> None:
        run_number = self.run.run_number if self.run else None
        self.db.save_core_state(str(self.sm.state), run_number)
        if run_number is not None and self.sm.state is not State.STOP:
            self.db.set_state(run_number, str(self.sm.state))
        if self.sm.state is State.ERROR:
            self._run_failed = True

    # --- receiving ------------------------------------------------------------------------

    def _malformed(self, why: str) -> None:
        self.counters["malformed_messages"] += 1
        self.last_malformed = why
        log.warning("ignored a malformed control message: %s", why)

    def _on_frames(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._malformed(f"expected one message frame, got {len(frames) - 1}")
            return
        identity, payload = frames
        try:
            msg = m.decode(payload)
        except m.MessageError as exc:
            self._malformed(str(exc))
            return
        name = self._by_identity.get(identity)
        if name is not None:
            self.components[name].last_seen = time.monotonic()
        handler = {
            m.Register: self._on_register, m.Heartbeat: self._on_heartbeat, m.Bye: self._on_bye,
            m.Command: self._on_command, m.Ack: self._on_ack, m.Progress: self._on_progress,
            m.Result: self._on_result,
        }.get(type(msg))
        if handler is None:
            self.counters["unexpected_messages"] += 1
            log.warning("ignored a %s message: the core does not take those", msg.TYPE)
            return
        try:
            handler(identity, msg)
        except Exception as exc:  # one bad request must never take the core down
            self.counters["internal_errors"] += 1
            log.exception("error while handling a %s message", msg.TYPE)
            if isinstance(msg, m.Command):
                self._send(identity, m.Result(
                    id=msg.id, success=False,
                    message=f"the core failed on {msg.command}: {type(exc).__name__}: {exc}"))

    def _on_register(self, identity: bytes, msg: m.Register) -> None:
        now = time.monotonic()
        refusal = self._refusal(msg, now)
        if refusal is not None:
            self._send(identity, m.Reject(code="duplicate-name", message=refusal))
            return
        old = self.components.get(msg.name)
        if old is not None and old.identity != identity:
            if (old.host, old.pid) != (msg.host, msg.pid):
                # Same host, same role, another pid (``_refusal`` let it through): the old
                # process died or was restarted before its silence was noticed. The newer one
                # wins; the old one, should it still be alive, is refused when it next speaks.
                self._superseded[(old.name, old.host, old.pid)] = (msg.pid,
                                                                   now + SUPERSEDED_TTL)
                self.counters["components_replaced"] += 1
                self._remove(old, f"component {old.name} ({old.role}) restarted: pid "
                                  f"{msg.pid} registered from {msg.host} while pid {old.pid} "
                                  "was still considered alive", lost=True, what="restarted")
                old = None
            else:
                self._by_identity.pop(old.identity, None)  # the same process reconnected
        if old is not None and old.busy:
            self._steps.pop(old.busy, None)
        comp = _Component(
            name=msg.name, role=msg.role, host=msg.host, pid=msg.pid, identity=identity,
            actions=msg.actions, counter_names=list(msg.counters), endpoints=msg.endpoints,
            state=msg.state, run_number=msg.run_number, last_seen=time.monotonic(),
        )
        self.components[msg.name] = comp
        self._by_identity[identity] = msg.name
        missing = self._missing.pop(msg.name, None)
        self._send(identity, m.Welcome(
            name=msg.name, state=str(self.sm.state),
            run=self.run.to_dict() if self.run else None,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout, services=self._services()))
        if missing is not None and missing.incident is not None:
            self._rejoined(comp, missing, now)
        elif old is None:
            self._event("joined", f"component {msg.name} ({msg.role}) registered from "
                        f"{msg.host} pid {msg.pid}", {"component": msg.name, "role": msg.role})
        if missing is not None:
            self._into_transition(comp)
        self._reconcile(comp)
        self._follow_log_service()

    def _refusal(self, msg: m.Register, now: float) -> str | None:
        """Why a registration must be refused (``duplicate-name``), or None.

        A name belongs to one process. A newer process may take it over from an older one that
        is still considered alive only from the same host and in the same role (the old one
        died or was restarted there; a second machine or another kind of component using the
        name is a configuration mistake, and the old holder keeps it). A process that was taken
        over from is refused, so it stops instead of fighting over the name. While a lost
        component's grace runs, its name is kept for its role.
        """
        superseded = self._superseded.get((msg.name, msg.host, msg.pid))
        if superseded is not None:
            if now < superseded[1]:
                return (f"component {msg.name} pid {msg.pid} on {msg.host} was replaced by pid "
                        f"{superseded[0]}; this process should stop")
            del self._superseded[(msg.name, msg.host, msg.pid)]
        old = self.components.get(msg.name)
        if old is not None and (old.host, old.pid) != (msg.host, msg.pid) and (
            self.rejoin_grace <= 0 or old.host != msg.host or old.role != msg.role
        ):
            return (f"a component named {msg.name!r} is already registered from "
                    f"{old.host} pid {old.pid}; choose another name")
        missing = self._missing.get(msg.name)
        if missing is not None and missing.role != msg.role:
            return (f"the name {msg.name!r} is kept for {missing.role} {msg.name}, {missing.what}"
                    f" during run {self.run.run_number if self.run else '?'} and still allowed "
                    f"to register again for {max(0.0, missing.deadline - now):.1f} s; a "
                    f"{msg.role} cannot take it")
        return None

    def _rejoined(self, comp: _Component, missing: _Missing, now: float) -> None:
        """A lost run participant is back within its grace: its incident is resolved."""
        after = now - missing.since
        self.counters["components_rejoined"] += 1
        resolution = (f"{comp.role} {comp.name} registered again after {after:.2f} s "
                      f"(pid {comp.pid} on {comp.host})")
        if self.run is not None:
            self.db.resolve_incident(self.run.run_number, missing.incident, resolution)
        self._event("rejoined", f"component {comp.name} ({comp.role}) rejoined"
                    f"{f' run {self.run.run_number}' if self.run else ''} after {after:.2f} s "
                    f"(pid {comp.pid} on {comp.host})",
                    {"component": comp.name, "role": comp.role, "after_s": round(after, 3),
                     "run_number": self.run.run_number if self.run else None})

    def _into_transition(self, comp: _Component) -> None:
        """A participant registered again during a transition: bring it along with it."""
        tr = self._transition
        if tr is None:
            return
        if comp.name in tr.rejoining:  # its group is waiting for it
            tr.rejoining.discard(comp.name)
            self._transition_catch_up(comp)
            self._maybe_next_group()
        elif any(comp.name in g for g in tr.groups[tr.index + 1:]):
            tr.rejoined.add(comp.name)  # a later group: brought along when its turn comes

    def _follow_log_service(self) -> None:
        """Send the core's own log records to the log collector while there is one."""
        if not self.forward_logs:
            return
        address = self._services().get("logs")
        if address == self._log_address:
            return
        from larpixdaq.runcontrol import logforward

        if self._log_address is not None:
            logforward.uninstall_forwarding(self._log_address, logger="larpixdaq.core")
            self._log_address = None
        if isinstance(address, str):
            logforward.install_forwarding(address, "core", logger="larpixdaq.core")
            self._log_address = address

    def _services(self) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for c in self.components.values():
            for key, value in c.endpoints.items():
                services.setdefault(key, value)
        return services

    def _on_heartbeat(self, identity: bytes, msg: m.Heartbeat) -> None:
        name = self._by_identity.get(identity)
        if name is None:
            self._send(identity, m.Reject(code="not-registered",
                                          message="register before sending heartbeats"))
            return
        comp = self.components[name]
        comp.counters = msg.counters
        if comp.busy is None:
            comp.state, comp.run_number = msg.state, msg.run_number

    def _on_bye(self, identity: bytes, msg: m.Bye) -> None:
        name = self._by_identity.get(identity)
        if name is not None:
            self._remove(self.components[name], f"component {name} left", lost=False)

    # --- operators ----------------------------------------------------------------------

    def _on_command(self, identity: bytes, cmd: m.Command) -> None:
        if identity in self._by_identity:
            self.counters["unexpected_messages"] += 1
            return
        self._operators[identity] = time.monotonic()
        handlers = {
            "status": self._cmd_status, "clients": self._cmd_clients,
            "actions": self._cmd_actions, "runs": self._cmd_runs, "run": self._cmd_run,
            "invoke": self._cmd_invoke, "ping": self._cmd_ping,
        }
        if cmd.command in _TRANSITION_REQUESTS:
            self._send(identity, m.Ack(id=cmd.id))
            self._start_transition(identity, cmd)
            return
        handler = handlers.get(cmd.command)
        if handler is None:
            known = ", ".join(sorted([*handlers, *_TRANSITION_REQUESTS]))
            self._send(identity, m.Result(id=cmd.id, success=False,
                                          message=f"unknown command {cmd.command!r}; known: "
                                                  f"{known}"))
            return
        self._send(identity, m.Ack(id=cmd.id))
        try:
            handler(identity, cmd)
        except (KeyError, TypeError, ValueError) as exc:
            self._send(identity, m.Result(id=cmd.id, success=False,
                                          message=f"bad parameters for {cmd.command}: {exc}"))

    def _reply(self, identity: bytes, cmd: m.Command, success: bool, message: str,
               data: dict | None = None) -> None:
        self._send(identity, m.Result(id=cmd.id, success=success, message=message,
                                      data=data or {}))

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        incidents = []
        if self.run is not None:
            incidents = self.db.get_run(self.run.run_number).incidents
        return {
            "state": str(self.sm.state),
            "allowed": self.sm.allowed,
            "run": self.run.to_dict() if self.run else None,
            "incidents": incidents,
            "components": [c.summary(now) for c in self.components.values()],
            "missing": [x.summary(now) for x in self._missing.values()],
            "rejoin_grace": self.rejoin_grace,
            "counters": dict(self.counters),
            "last_malformed": self.last_malformed,
            "endpoint": self.endpoint,
            "pid": os.getpid(),
        }

    def _cmd_ping(self, identity: bytes, cmd: m.Command) -> None:
        self._reply(identity, cmd, True, "pong")

    def _cmd_status(self, identity: bytes, cmd: m.Command) -> None:
        st = self.status()
        run = f", run {st['run']['run_number']}" if st["run"] else ""
        missing = ", ".join(x["name"] for x in st["missing"])
        missing = f", missing: {missing}" if missing else ""
        self._reply(identity, cmd, True, f"{st['state']}{run}, "
                    f"{len(st['components'])} component(s){missing}", st)

    def _cmd_clients(self, identity: bytes, cmd: m.Command) -> None:
        now = time.monotonic()
        comps = [c.summary(now) for c in self.components.values()]
        self._reply(identity, cmd, True, f"{len(comps)} component(s)", {"components": comps})

    def _cmd_actions(self, identity: bytes, cmd: m.Command) -> None:
        acts = {c.name: c.actions for c in self.components.values()}
        self._reply(identity, cmd, True, f"{sum(map(len, acts.values()))} action(s)",
                    {"actions": acts})

    def _cmd_runs(self, identity: bytes, cmd: m.Command) -> None:
        limit = cmd.params.get("limit")
        runs = [r.to_dict() for r in self.db.list_runs(limit=int(limit) if limit else None)]
        self._reply(identity, cmd, True, f"{len(runs)} run(s)", {"runs": runs})

    def _cmd_run(self, identity: bytes, cmd: m.Command) -> None:
        number = int(cmd.params["run_number"])
        try:
            rec = self.db.get_run(number)
        except RunDatabaseError as exc:
            self._reply(identity, cmd, False, str(exc))
            return
        self._reply(identity, cmd, True, f"run {number}", {"run": rec.to_dict()})

    def _cmd_invoke(self, identity: bytes, cmd: m.Command) -> None:
        name = cmd.params.get("component")
        action = cmd.params.get("action")
        params = cmd.params.get("params") or {}
        comp = self.components.get(name) if isinstance(name, str) else None
        if comp is None:
            self._reply(identity, cmd, False, f"no component named {name!r}; registered: "
                        f"{', '.join(sorted(self.components)) or 'none'}")
            return
        if action not in comp.actions:
            self._reply(identity, cmd, False, f"component {name} has no action {action!r}; "
                        f"it offers: {', '.join(sorted(comp.actions)) or 'none'}")
            return
        if not isinstance(params, dict):
            self._reply(identity, cmd, False, "invoke params must be a map of name -> value")
            return
        req = self._new_id()
        # Fail the action a little before the operator gives up, so that the operator hears
        # which action on which component timed out rather than a bare time-out.
        timeout = 0.9 * cmd.timeout if cmd.timeout else 3600.0
        self._invokes[req] = _Invoke((identity, cmd.id), name, action,
                                     time.monotonic() + timeout)
        self._send(comp.identity, m.Invoke(id=req, action=action, params=params))

    # --- transitions --------------------------------------------------------------------

    def _start_transition(self, identity: bytes, cmd: m.Command) -> None:
        previous = self.sm.state
        if cmd.command == "prepare_run":
            wrong = sorted(k for k in _PREPARE_PARAMS
                           if not isinstance(cmd.params.get(k), (str, type(None))))
            unknown = sorted(set(cmd.params) - set(_PREPARE_PARAMS))
            if wrong or unknown:
                self._reply(identity, cmd, False,
                            f"prepare_run parameters {', '.join(wrong + unknown)} are not "
                            f"accepted; give text for {', '.join(_PREPARE_PARAMS)}")
                return
        if cmd.command == "end_run" and (
                set(cmd.params) - {"reason"} or not isinstance(cmd.params.get("reason", ""), str)):
            self._reply(identity, cmd, False, "end_run takes only `reason`, as text")
            return
        try:
            new = self.sm.request(cmd.command)
        except TransitionRefused as exc:
            self._reply(identity, cmd, False, str(exc),
                        {"state": str(exc.state), "allowed": exc.allowed})
            return
        if cmd.command == "prepare_run":
            p = cmd.params
            try:
                rec = self.db.allocate_run(
                    run_type=p.get("run_type") or "physics", comment=p.get("comment") or "",
                    data_dir=p.get("data_dir") or self.data_dir,
                    config_hash=p.get("config_hash"), config_snapshot=p.get("config_snapshot"),
                    state=str(new),
                )
            except Exception:
                self.sm = RunStateMachine(previous)  # nothing was started: undo the request
                raise
            self.run = m.RunInfo(run_number=rec.run_number, run_type=rec.run_type,
                                 comment=rec.comment, data_dir=rec.data_dir,
                                 start_time=rec.start_time, config_hash=rec.config_hash)
            self._run_failed = False
            self.db.set_participants(rec.run_number,
                                     {c.name: c.role for c in self.components.values()})
        elif cmd.command == "begin_run":
            self.db.set_begin_time(self.run.run_number)
        self._persist()
        transition = COMPONENT_TRANSITION[new]
        for comp in self.components.values():  # a transition supersedes any catch-up
            if comp.busy:
                self._steps.pop(comp.busy, None)
                comp.busy, comp.catch_up = None, []
        roles = {x.name: x.role for x in self._missing.values()}
        roles.update({c.name: c.role for c in self.components.values()})
        self._transition = _Transition(
            request=cmd.command, transition=transition, operator=(identity, cmd.id),
            groups=transition_groups(transition, roles), started=time.monotonic(),
            previous=previous, reason=str(cmd.params.get("reason") or ""),
        )
        self._advance()

    def _advance(self) -> None:
        tr = self._transition
        tr.index += 1
        # A reset is the way out and never waits for anyone to come back.
        awaits = tr.transition != "reset"
        while tr.index < len(tr.groups):
            group = [n for n in tr.groups[tr.index] if n in self.components]
            absent = [n for n in tr.groups[tr.index]
                      if awaits and n not in self.components and n in self._missing]
            if group or absent:
                break
            tr.index += 1
        else:
            self._complete()
            return
        tr.deadline = time.monotonic() + self.ack_timeout
        tr.rejoining = set(absent)
        for name in group:
            comp = self.components[name]
            if name in tr.rejoined:
                self._transition_catch_up(comp)
            else:
                self._send_transition_step(comp, tr.transition)
        if absent:
            self._tell_waiting(absent)
        self._maybe_next_group()

    def _send_transition_step(self, comp: _Component, step: str) -> None:
        tr = self._transition
        req = self._new_id()
        tr.waiting[req] = comp.name
        if step != tr.transition:
            tr.step_of[req] = step
        comp.busy = req
        run = self.run.to_dict() if self.run else None
        if step == "end" and comp.run_number is not None and (
            self.run is None or comp.run_number != self.run.run_number
        ):
            run = {"run_number": comp.run_number}
        self._send(comp.identity, m.Transition(id=req, transition=step, run=run))

    def _transition_catch_up(self, comp: _Component) -> None:
        """Bring a member that registered again to where the transition takes the DAQ.

        It may be a fresh process (STOP) or one that resumed the run (storage, from its
        journal): :func:`catch_up_steps` gives what it needs, which may be nothing.
        """
        tr = self._transition
        target = TRANSITION_TARGET[tr.transition]
        run_number = self.run.run_number if self.run and target is not State.STOP else None
        steps = catch_up_steps(comp.state, comp.run_number, target, run_number)
        if not steps:
            tr.done.append(comp.name)
            return
        comp.catch_up = steps[1:]
        tr.deadline = time.monotonic() + self.ack_timeout
        self._send_transition_step(comp, steps[0])

    def _maybe_next_group(self) -> None:
        """Tell the next group once every member of this one answered or came back."""
        tr = self._transition
        if tr is None or tr.waiting or tr.rejoining:
            return
        if tr.operator:
            self._send(tr.operator[0], m.Progress(id=tr.operator[1], data={
                "transition": tr.transition, "group": tr.index + 1,
                "groups": len(tr.groups), "done": list(tr.done)}))
        self._advance()

    def _tell_waiting(self, names: list[str]) -> None:
        tr = self._transition
        now = time.monotonic()
        waits = [f"{x.role} {x.name} ({x.what}; up to {max(0.0, x.deadline - now):.1f} s "
                 "more)" for x in (self._missing[n] for n in sorted(names))]
        text = f"{tr.transition} waits for {', '.join(waits)} to register again"
        log.info("%s", text)
        if tr.operator:
            self._send(tr.operator[0], m.Progress(id=tr.operator[1], data={
                "transition": tr.transition, "group": tr.index + 1, "groups": len(tr.groups),
                "waiting": text, "components": sorted(names)}))

    def _complete(self) -> None:
        tr = self._transition
        self._transition = None
        new = self.sm.handle(Completed())
        elapsed = time.monotonic() - tr.started
        data: dict[str, Any] = {"state": str(new), "elapsed_s": elapsed}
        if new is State.STOP and self.run is not None:
            number = self.run.run_number
            record = self.db.get_run(number)
            losses = run_losses(record.counters, record.roles)
            status = run_exit_status(
                tr.previous, went_through_error=self._run_failed,
                transition_failures=len(tr.failures), incidents=len(record.incidents),
                unresolved_incidents=len(record.unresolved_incidents),
                storage_reported=record.storage_reported,
                losses=losses)
            record = self.db.finish_run(number, status, end_reason=tr.reason)
            self.run = None
            self._missing.clear()  # nobody is expected back into a closed run
            self._persist()
            data["run"] = record.to_dict()
            message = f"run {number} ended ({status})"
            if losses:
                message += ": " + ", ".join(f"{k} {v}" for k, v in sorted(losses.items()))
            if tr.reason:
                message += f" ({tr.reason})"
        else:
            self._persist()
            message = f"{tr.request} done: state {new}"
            if self.run is not None:
                data["run_number"] = self.run.run_number
                data["run"] = self.run.to_dict()
        if tr.failures:
            message += "; " + "; ".join(tr.failures)
        if tr.operator:
            self._send(tr.operator[0], m.Result(id=tr.operator[1], success=True,
                                                message=message, data=data))
        self._event("state", f"state {new}", {"state": str(new)})
        self._reconcile_all()

    def _fail_transition(self, reason: str) -> None:
        tr = self._transition
        if tr.transition == "reset":
            tr.failures.append(reason)  # a reset goes on regardless; reported at the end
            return
        self._transition = None
        for req, name in tr.waiting.items():
            comp = self.components.get(name)
            if comp is not None and comp.busy == req:
                comp.busy, comp.catch_up = None, []
        self.sm.handle(Failed(reason))
        if self.run is not None:
            self.db.add_incident(self.run.run_number, f"{tr.transition} failed: {reason}")
        self._persist()
        message = f"{tr.request} failed: {reason}; state is now {self.sm.state}"
        if tr.operator:
            self._send(tr.operator[0], m.Result(
                id=tr.operator[1], success=False, message=message,
                data={"state": str(self.sm.state), "reason": reason}))
        self._event("error", message, {"state": str(self.sm.state)})

    def _on_ack(self, identity: bytes, msg: m.Ack) -> None:
        name = self._by_identity.get(identity)
        tr = self._transition
        if tr is not None and msg.id in tr.waiting:
            name = tr.waiting.pop(msg.id)
            step = tr.step_of.pop(msg.id, tr.transition)
            comp = self.components.get(name)
            was_in = comp.run_number if comp is not None else None
            if comp is not None:
                comp.busy = None
                if msg.ok:
                    comp.state = COMPONENT_STATE_AFTER[step]
                    in_run = self.run is not None and comp.state != "STOP"
                    comp.run_number = self.run.run_number if in_run else None
            if step == tr.transition or (self.run is not None
                                         and was_in == self.run.run_number):
                self._record_end_data(name, comp, step, msg)
            if msg.ok:
                if comp is not None and comp.catch_up:  # a returning member, more to do
                    tr.deadline = time.monotonic() + self.ack_timeout
                    self._send_transition_step(comp, comp.catch_up.pop(0))
                    return
                tr.done.append(name)
            else:
                role = comp.role if comp else "?"
                reason = f"{role} {name} refused {step}: {msg.message}"
                if comp is not None:
                    comp.catch_up = []
                if tr.transition != "reset":
                    self._fail_transition(reason)
                    return
                tr.failures.append(reason)
            self._maybe_next_group()
            return
        if msg.id in self._steps:
            self._on_step_ack(msg)
            return
        if msg.id in self._invokes:
            return  # the component accepted the action; the operator already has our ack
        self.counters["late_replies"] += 1
        log.info("dropped a late ack %s from %s", msg.id, name)

    def _record_end_data(self, name: str, comp: _Component | None, transition: str,
                         msg: m.Ack) -> None:
        if transition not in ("end", "reset") or self.run is None:
            return
        counters = msg.data.get("counters")
        files = msg.data.get("files")
        if isinstance(counters, dict) or isinstance(files, list):
            self.db.record_component(
                self.run.run_number, name, comp.role if comp else "?",
                counters if isinstance(counters, dict) else {},
                [str(f) for f in files] if isinstance(files, list) else [],
            )

    # --- catch-up of late joiners ---------------------------------------------------------

    def _reconcile_all(self) -> None:
        for comp in list(self.components.values()):
            self._reconcile(comp)

    def _reconcile(self, comp: _Component) -> None:
        if self._transition is not None or comp.busy is not None:
            return
        run_number = self.run.run_number if self.run else None
        steps = catch_up_steps(comp.state, comp.run_number, self.sm.state, run_number)
        if not steps:
            return
        comp.catch_up = steps
        self._send_step(comp)

    def _send_step(self, comp: _Component) -> None:
        transition = comp.catch_up.pop(0)
        req = self._new_id()
        comp.busy = req
        self._steps[req] = (comp.name, transition, time.monotonic() + self.ack_timeout)
        run = self.run.to_dict() if self.run else None
        if transition == "end" and comp.run_number is not None and (
            self.run is None or comp.run_number != self.run.run_number
        ):
            run = {"run_number": comp.run_number}
        self._send(comp.identity, m.Transition(id=req, transition=transition, run=run))

    def _on_step_ack(self, msg: m.Ack) -> None:
        name, transition, _ = self._steps.pop(msg.id)
        comp = self.components.get(name)
        if comp is None:
            return
        comp.busy = None
        if not msg.ok:
            comp.catch_up = []
            self._step_failed(comp, f"{comp.role} {name} refused {transition} while joining: "
                                    f"{msg.message}")
            return
        comp.state = COMPONENT_STATE_AFTER[transition]
        comp.run_number = self.run.run_number if (self.run and transition != "end") else None
        if comp.catch_up:
            self._send_step(comp)
        elif transition != "end":
            if self.run is not None:
                participants = self.db.get_run(self.run.run_number).participants
                if participants.get(name) != comp.role:
                    participants[name] = comp.role
                    self.db.set_participants(self.run.run_number, participants)
            self._event("caught-up", f"component {name} brought to {comp.state}",
                        {"component": name, "state": comp.state})

    def _step_failed(self, comp: _Component, reason: str) -> None:
        if self.run is not None:
            self.db.add_incident(self.run.run_number, reason)
        self._event("error", reason, {"component": comp.name})

    # --- components' replies to actions -----------------------------------------------------

    def _on_progress(self, identity: bytes, msg: m.Progress) -> None:
        inv = self._invokes.get(msg.id)
        if inv is None:
            self.counters["late_replies"] += 1
            return
        self._send(inv.operator[0], m.Progress(id=inv.operator[1], data=msg.data))

    def _on_result(self, identity: bytes, msg: m.Result) -> None:
        inv = self._invokes.pop(msg.id, None)
        if inv is None:
            self.counters["late_replies"] += 1
            return
        self._send(inv.operator[0], m.Result(id=inv.operator[1], success=msg.success,
                                             message=msg.message, data=msg.data))

    # --- time ---------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval
            run_number = self.run.run_number if self.run else None
            hb = m.Heartbeat(name="core", state=str(self.sm.state), run_number=run_number,
                             services=self._services())
            for comp in self.components.values():
                self._send(comp.identity, hb)
        for comp in list(self.components.values()):
            silent = now - comp.last_seen
            if silent > self.heartbeat_timeout:
                self.counters["components_lost"] += 1
                self._remove(comp, f"component {comp.name} ({comp.role}) lost: no heartbeat "
                                   f"for {silent:.2f} s", lost=True)
        tr = self._transition
        if tr is not None and tr.waiting and now > tr.deadline:
            silent_names = sorted(tr.waiting.values())
            described = ", ".join(
                f"{self.components[n].role if n in self.components else '?'} {n}"
                for n in silent_names)
            reason = (f"{described} did not acknowledge {tr.transition} within "
                      f"{self.ack_timeout:g} s")
            for req in list(tr.waiting):
                comp = self.components.get(tr.waiting[req])
                if comp is not None and comp.busy == req:
                    comp.busy, comp.catch_up = None, []
            tr.waiting.clear()
            self._fail_transition(reason)
            if self._transition is tr:  # a reset carries on with the next group
                self._advance()
        for req, (name, transition, deadline) in list(self._steps.items()):
            if now > deadline:
                del self._steps[req]
                comp = self.components.get(name)
                if comp is not None:
                    comp.busy, comp.catch_up = None, []
                    self._step_failed(comp, f"{comp.role} {name} did not acknowledge "
                                            f"{transition} within {self.ack_timeout:g} s")
        for req, inv in list(self._invokes.items()):
            if now > inv.deadline:
                del self._invokes[req]
                self._send(inv.operator[0], m.Result(
                    id=inv.operator[1], success=False,
                    message=f"action {inv.action} on {inv.component} timed out"))
        expired = [x for x in self._missing.values() if now > x.deadline]
        if expired:
            self._grace_expired(expired)

    def _grace_expired(self, expired: list[_Missing]) -> None:
        """Participants that did not come back in time: the run goes to ERROR, naming them."""
        for x in expired:
            del self._missing[x.name]
        reasons = []
        absent = sorted(x.name for x in expired if x.incident is None)
        if absent:
            reasons.append(f"component(s) {', '.join(absent)} did not register again after "
                           "the core restarted")
        for x in sorted((x for x in expired if x.incident is not None), key=lambda x: x.name):
            reasons.append(f"component {x.name} ({x.role}) {x.what} and did not register "
                           f"again within {self.rejoin_grace:g} s")
        reason = "; ".join(reasons)
        if self.run is None:
            return
        tr = self._transition
        if tr is not None:
            tr.rejoining.difference_update(x.name for x in expired)
            if tr.transition == "reset":
                tr.failures.append(reason)
                return
            self._fail_transition(reason)  # records the incident, tells everyone
            return
        self.db.add_incident(self.run.run_number, reason)
        before = self.sm.state
        self._fault(reason)
        if self.sm.state is before:  # already in ERROR: still say who is not coming back
            self._event("error", f"{reason}; state is {self.sm.state}",
                        {"state": str(self.sm.state), "components": [x.name for x in expired]})

    def _fault(self, reason: str) -> None:
        if self._transition is not None:
            self._fail_transition(reason)
            return
        before = self.sm.state
        self.sm.handle(Fault(reason))
        self._persist()
        if self.sm.state is not before:
            self._event("error", f"{reason}; state is now {self.sm.state}",
                        {"state": str(self.sm.state)})

    def _remove(self, comp: _Component, reason: str, *, lost: bool,
                what: str | None = None) -> None:
        del self.components[comp.name]
        self._by_identity.pop(comp.identity, None)
        self._follow_log_service()
        if comp.busy:
            self._steps.pop(comp.busy, None)
        tr = self._transition
        in_run = self.run is not None and self.sm.state in RUN_OPEN_STATES
        waited_on = tr is not None and comp.name in tr.waiting.values()
        affects_run = in_run and (waited_on or comp.state != "STOP" or lost)
        # Held for the grace instead of failing at once; never during a reset (the way out).
        hold = (affects_run and self.rejoin_grace > 0
                and not (tr is not None and tr.transition == "reset"))
        data: dict[str, Any] = {"component": comp.name, "role": comp.role}
        message = reason
        if hold:
            message += (f"; run {self.run.run_number} is held up to {self.rejoin_grace:g} s "
                        "for it to register again")
            data.update(run_number=self.run.run_number, rejoin_grace=self.rejoin_grace)
        self._event("lost" if lost else "left", message, data)
        for req, inv in list(self._invokes.items()):
            if inv.component == comp.name:
                del self._invokes[req]
                self._send(inv.operator[0], m.Result(id=inv.operator[1], success=False,
                                                     message=f"{reason} during {inv.action}"))
        if waited_on:
            for req in [r for r, n in tr.waiting.items() if n == comp.name]:
                del tr.waiting[req]
                tr.step_of.pop(req, None)
        if hold:
            index = self.db.add_incident(self.run.run_number, reason)
            now = time.monotonic()
            self._missing[comp.name] = _Missing(
                comp.name, comp.role, now, now + self.rejoin_grace, index,
                what or ("lost" if lost else "left"))
            if waited_on:
                tr.rejoining.add(comp.name)
                self._tell_waiting([comp.name])
            return
        if waited_on:
            if self.run is not None:
                self.db.add_incident(self.run.run_number, reason)
            self._fail_transition(reason)
            if self._transition is tr and not tr.waiting:
                self._advance()
            return
        if affects_run:
            self.db.add_incident(self.run.run_number, reason)
            self._fault(reason)

