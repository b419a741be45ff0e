"""The core: knows every component, holds the run state, hands out run numbers, routes commands.

One ZeroMQ ROUTER socket serves both components and operators (each connects a DEALER); the
first message of a peer says which it is (``register`` for a component, ``command`` for an
operator). One socket keeps one event loop, one port to open in a firewall, and one ordering
of everything the core sees.

This module is the I/O shell: the socket, the run database and the clock. What to decide is
elsewhere and pure, so it can be tested without any of those:

* :mod:`.roster`: who is registered, who owns a name, who is missing and until when;
* :mod:`.planner`: the run state (through :mod:`.statemachine`), the transition in progress
  group by group, and bringing components to the core's state; it returns *effects* that
  :meth:`Core.apply` carries out in order;
* :mod:`.commands`: the operator commands, one table with one entry point.

What the loop does, every turn: reads messages (one that does not decode is counted and
ignored, never fatal) and hands each to the roster, the planner or the commands; sends
heartbeats; declares lost any component silent for longer than ``heartbeat_timeout`` (0.8 s by
default); and ticks the planner with the time (ack time-outs, rejoin graces running out).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from larpixdaq.runcontrol import commands
from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol import planner as p
from larpixdaq.runcontrol.access import Access, Verdict
from larpixdaq.runcontrol.addresses import DEFAULT_CORE
from larpixdaq.runcontrol.policy import Role
from larpixdaq.runcontrol.roster import ABSENT_AFTER_RESTART, Member, Missing, Roster
from larpixdaq.runcontrol.rundb import RunDatabase
from larpixdaq.runcontrol.security import ServerKeys
from larpixdaq.runcontrol.statemachine import State, run_exit_status, run_losses

log = logging.getLogger("larpixdaq.core")

OPERATOR_TTL = 600.0


def _client_name(identity: bytes) -> str:
    """An operator's connection as the audit shows it: the name it gave (``cli@host:pid-…``),
    or the hex of the id ZeroMQ made up."""
    text = identity.decode("ascii", "replace")
    return text if text.isprintable() and "\ufffd" not in text else identity.hex()


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
        require_login: bool = False,
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
        # Every command is authorised (commands.handle asks authorise(); roles: policy.py);
        # anonymous clients are viewers unless the site requires a login.
        self.access = Access(db_path, anonymous=None if require_login else Role.VIEWER)
        self._audited: dict[tuple[bytes, str], int] = {}  # (operator, request id) -> audit id
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self.endpoint: str | None = None
        self.roster = Roster(rejoin_grace)
        self._operators: dict[bytes, float] = {}
        self._invokes: dict[str, _Invoke] = {}
        self._ids = itertools.count(1)
        self._instance = uuid.uuid4().hex[:12]
        self._next_heartbeat = 0.0
        self.counters = {"malformed_messages": 0, "unexpected_messages": 0, "late_replies": 0,
                         "components_lost": 0, "components_rejoined": 0,
                         "components_replaced": 0, "internal_errors": 0, "messages_unsent": 0}
        self.last_malformed = ""
        self._stop = threading.Event()
        self._peer_key: str | None = None  # the key of the message being handled
        self.planner = p.Planner(self.roster, self._new_id, ack_timeout=ack_timeout)
        self._recover()

    @property
    def components(self) -> dict[str, Member]:
        """The registered components by name."""
        return self.roster.members

    # --- start-up and recovery ----------------------------------------------------------

    def _recover(self) -> None:
        """Take the state and the open run from the database (a restarted core carries on)."""
        record = self.db.open_run()
        if record is None:
            self._persist(State.STOP, None)
            return
        run = m.RunInfo(
            run_number=record.run_number, run_type=record.run_type, comment=record.comment,
            data_dir=record.data_dir, start_time=record.start_time,
            config_hash=record.config_hash, admitted=record.admitted,
        )
        saved = State(record.state) if record.state in State.__members__ else State.ERROR
        if saved not in (State.READY, State.RUN, State.ERROR):
            self.db.add_incident(record.run_number, f"core restarted during {saved}")
        state = saved if saved in (State.READY, State.RUN, State.ERROR) else State.ERROR
        self.planner = p.Planner(
            self.roster, self._new_id, ack_timeout=self.ack_timeout, state=state, run=run,
            # An incident fails the run only if it is still open when the run ends (a
            # component lost before the restart may yet come back and put it right).
            run_failed=state is State.ERROR)
        self._persist(state, record.run_number)
        now = time.monotonic()
        resolved = set(record.resolved_incidents)
        for name, role in record.participants.items():
            held = self.roster.hold(name, role, now, ABSENT_AFTER_RESTART)
            # A participant lost before the core went down keeps its open incident: its
            # return resolves it, as it would have without the core's restart.
            held.incident = _open_incident(record.incidents, resolved, name, role)
        log.warning("recovered run %d in state %s", record.run_number, state)

    def bind(self) -> str:
        """Bind the ROUTER socket; returns the actual endpoint (port 0 or * picks a free one)."""
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # A message for a peer that is gone or not reading raises instead of vanishing, so
        # send can count it.
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
        self.access.close()
        self.db.close()

    def serve_forever(self) -> None:
        if self._sock is None:
            self.bind()
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        run = self.planner.run
        if run is not None:
            self._event("recovered", f"core recovered run {run.run_number} in state "
                        f"{self.planner.state}", {"run_number": run.run_number})
        while not self._stop.is_set():
            timeout = max(0.0, min(self._next_deadline() - time.monotonic(), 0.05))
            if poller.poll(timeout * 1000):
                for _ in range(1000):
                    try:
                        frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    # With keys, the peer's public key (what its registration is bound to).
                    self._peer_key = (frames[-1].get("User-Id")
                                      if self._server_keys is not None else None)
                    self._on_frames([f.bytes for f in frames])
            self._tick(time.monotonic())

    def _next_deadline(self) -> float:
        deadlines = [self._next_heartbeat, self.planner.next_deadline(),
                     self.roster.next_deadline()]
        return min(x for x in deadlines if x is not None)

    def clock(self) -> float:
        return time.monotonic()

    # --- sending --------------------------------------------------------------------------

    def send(self, identity: bytes, msg: m.Message) -> None:
        if isinstance(msg, m.Result) and self._audited:
            audit_id = self._audited.pop((identity, msg.id), None)
            if audit_id is not None:  # the final result of an audited request
                self.db.finish_audit(audit_id, msg.success, msg.message)
        try:
            self._sock.send_multipart([identity, m.encode(msg)], zmq.NOBLOCK)
        except zmq.Again:
            self.counters["messages_unsent"] += 1
            log.warning("dropped a message (%s) to a peer that is not reading", msg.TYPE)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            # Routine, not news: every short-lived operator (each CLI command, a closed web
            # page) that was sent events goes this way. Counted; it is told nothing more.
            self.counters["messages_unsent"] += 1
            self._operators.pop(identity, None)
            log.debug("dropped a message (%s) to a peer that has gone", msg.TYPE)

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
                self.send(identity, ev)

    def _persist(self, state: State, run_number: int | None) -> None:
        self.db.save_core_state(str(state), run_number)
        if run_number is not None and state is not State.STOP:
            self.db.set_state(run_number, str(state))

    # --- applying the planner's effects ---------------------------------------------------

    def apply(self, effects: list[p.Effect]) -> None:
        """Carry out what the planner decided, in order."""
        for effect in effects:
            if isinstance(effect, p.SendStep):
                member = self.roster.members.get(effect.name)
                if member is not None:
                    self.send(member.identity, m.Transition(
                        id=effect.id, transition=effect.step, run=effect.run))
            elif isinstance(effect, p.Reply):
                self._reply_effect(effect)
            elif isinstance(effect, p.Notify):
                self._event(effect.kind, effect.message, effect.data)
            elif isinstance(effect, p.SaveState):
                self._persist(effect.state, effect.run_number)
            elif isinstance(effect, p.Incident):
                index = self.db.add_incident(effect.run_number, effect.reason)
                if effect.resolution is not None:
                    self.db.resolve_incident(effect.run_number, index, effect.resolution)
                held = self.roster.missing.get(effect.hold) if effect.hold else None
                if held is not None:
                    held.incident = index
            elif isinstance(effect, p.RecordEnd):
                self.db.record_component(effect.run_number, effect.name, effect.role,
                                         effect.counters, effect.files)
            elif isinstance(effect, p.AddParticipant):
                participants = self.db.get_run(effect.run_number).participants
                if participants.get(effect.name) != effect.role:
                    participants[effect.name] = effect.role
                    self.db.set_participants(effect.run_number, participants)
            elif isinstance(effect, p.TransitionDone):
                self._transition_done(effect)
            else:  # pragma: no cover - a new effect without its application
                raise TypeError(f"no way to apply {effect!r}")

    def _reply_effect(self, effect: p.Reply) -> None:
        identity, req = effect.to
        if effect.final:
            self.send(identity, m.Result(id=req, success=effect.success,
                                         message=effect.message, data=effect.data))
            return
        if "waiting" in effect.data:
            log.info("%s", effect.data["waiting"])
        self.send(identity, m.Progress(id=req, data=effect.data))

    def _transition_done(self, done: p.TransitionDone) -> None:
        data: dict[str, Any] = {"state": str(done.state), "elapsed_s": done.elapsed}
        if done.closes is not None:
            record = self.db.get_run(done.closes)
            losses = run_losses(record.counters, record.roles)
            status = run_exit_status(
                done.ended_from, went_through_error=done.went_through_error,
                transition_failures=len(done.failures), incidents=len(record.incidents),
                unresolved_incidents=len(record.unresolved_incidents),
                storage_reported=record.storage_reported, losses=losses)
            record = self.db.finish_run(done.closes, status, end_reason=done.reason)
            self._persist(done.state, None)
            data["run"] = record.to_dict()
            message = f"run {done.closes} ended ({status})"
            if losses:
                message += ": " + ", ".join(f"{k} {v}" for k, v in sorted(losses.items()))
            if done.reason:
                message += f" ({done.reason})"
        else:
            run_number = done.run["run_number"] if done.run else None
            self._persist(done.state, run_number)
            message = f"{done.request} done: state {done.state}"
            if done.run is not None:
                data["run_number"] = run_number
                data["run"] = done.run
        if done.failures:
            message += "; " + "; ".join(done.failures)
        if done.to:
            self.send(done.to[0], m.Result(id=done.to[1], success=True, message=message,
                                           data=data))

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
        self.roster.seen(identity, time.monotonic())
        handler = {
            m.Register: self._on_register, m.Heartbeat: self._on_heartbeat, m.Bye: self._on_bye,
            m.Command: self._on_command, m.Ack: self._on_ack, m.Progress: self._on_progress,
            m.Result: self._on_result, m.Alarm: self._on_alarm, m.Notice: self._on_notice,
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
                self.send(identity, m.Result(
                    id=msg.id, success=False,
                    message=f"the core failed on {msg.command}: {type(exc).__name__}: {exc}"))

    def _on_register(self, identity: bytes, msg: m.Register) -> None:
        now = time.monotonic()
        key = self._peer_key
        admission = self.roster.admit(msg, identity, now, self.planner.run_number, key)
        if admission.refusal is not None:
            self.send(identity, m.Reject(code="duplicate-name", message=admission.refusal))
            return
        old = admission.displaces
        if old is not None:
            # Same host, same role, another pid: the old process died or was restarted before
            # its silence was noticed. The newer one wins; the old one, should it still be
            # alive, is refused when it next speaks.
            self.counters["components_replaced"] += 1
            self._lose(old, f"component {old.name} ({old.role}) restarted: pid {msg.pid} "
                            f"registered from {msg.host} while pid {old.pid} was still "
                            "considered alive", lost=True, what="restarted")
        if admission.reconnects is not None:
            self.planner.reconnected(msg.name)
        member, missing = self.roster.add(msg, identity, now, key)
        run = self.planner.run
        self.send(identity, m.Welcome(
            name=msg.name, state=str(self.planner.state),
            run=run.to_dict() if run else None,
            heartbeat_interval=self.heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout, services=self.roster.services()))
        if missing is not None and (not missing.after_restart or missing.incident is not None):
            self._rejoined(member, missing, now)  # (lost before a core restart: incident kept)
        elif admission.reconnects is None:
            self._event("joined", f"component {msg.name} ({msg.role}) registered from "
                        f"{msg.host} pid {msg.pid}", {"component": msg.name, "role": msg.role})
        self.apply(self.planner.registered(member, missing is not None, now))
        self._follow_log_service()

    def _rejoined(self, member: Member, missing: Missing, now: float) -> None:
        """A lost run participant is back within its grace: its incident is resolved."""
        after = now - missing.since
        self.counters["components_rejoined"] += 1
        resolution = (f"{member.role} {member.name} registered again after {after:.2f} s "
                      f"(pid {member.pid} on {member.host})")
        run_number = self.planner.run_number
        if run_number is not None and missing.incident is not None:
            self.db.resolve_incident(run_number, missing.incident, resolution)
        self._event("rejoined", f"component {member.name} ({member.role}) rejoined"
                    f"{f' run {run_number}' if run_number is not None else ''} after "
                    f"{after:.2f} s (pid {member.pid} on {member.host})",
                    {"component": member.name, "role": member.role,
                     "after_s": round(after, 3), "run_number": run_number})

    def _follow_log_service(self) -> None:
        """Send the core's own log records to the log collector while there is one."""
        if not self.forward_logs:
            return
        address = self.roster.services().get("logs")
        if address == self._log_address:
            return
        from larpixdaq.runcontrol import logforward

        if self._log_address is not None:
            logforward.uninstall_forwarding(self._log_address, logger="larpixdaq.core")
            self._log_address = None
        if isinstance(address, str):
            logforward.install_forwarding(address, "core", logger="larpixdaq.core",
                                          keys=self._server_keys and self._server_keys.as_client())
            self._log_address = address

    def _on_heartbeat(self, identity: bytes, msg: m.Heartbeat) -> None:
        name = self.roster.name_of(identity)
        if name is None:
            self.send(identity, m.Reject(code="not-registered",
                                         message="register before sending heartbeats"))
            return
        member = self.roster.members[name]
        member.counters = msg.counters
        if not self.planner.busy(name):
            member.state, member.run_number = msg.state, msg.run_number

    def _on_alarm(self, identity: bytes, msg: m.Alarm) -> None:
        """A component cannot carry on with the run (storage cannot write): the operators
        hear it at once, the run records it and fails (ERROR) with the cause."""
        name = self.roster.name_of(identity)
        if name is None:
            self.send(identity, m.Reject(code="not-registered",
                                         message="register before raising alarms"))
            return
        self.apply(self.planner.alarm(self.roster.members[name], msg.message, msg.data))

    def _on_notice(self, identity: bytes, msg: m.Notice) -> None:
        """A component tells what the run's data must be read with (a hole in a board's
        data): the operators hear it, the run records it; the run goes on."""
        name = self.roster.name_of(identity)
        if name is None:
            self.send(identity, m.Reject(code="not-registered",
                                         message="register before sending notices"))
            return
        self.apply(self.planner.notice(self.roster.members[name], msg.message, msg.data))

    def _on_bye(self, identity: bytes, msg: m.Bye) -> None:
        name = self.roster.name_of(identity)
        if name is not None:
            self._lose(self.roster.members[name], f"component {name} left", lost=False)

    def _lose(self, member: Member, reason: str, *, lost: bool, what: str | None = None) -> None:
        """Take ``member`` out: roster, planner (hold or fail), its pending actions."""
        self.roster.remove(member.name)
        self._follow_log_service()
        self.apply(self.planner.lost(member, reason, time.monotonic(), lost=lost, what=what))
        for req, inv in list(self._invokes.items()):
            if inv.component == member.name:
                del self._invokes[req]
                self.send(inv.operator[0], m.Result(id=inv.operator[1], success=False,
                                                    message=f"{reason} during {inv.action}"))

    # --- operators ----------------------------------------------------------------------

    def _on_command(self, identity: bytes, cmd: m.Command) -> None:
        if self.roster.name_of(identity) is not None:
            self.counters["unexpected_messages"] += 1
            return
        self._operators[identity] = time.monotonic()
        commands.handle(self, commands.Requester(identity), cmd)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        run = self.planner.run
        incidents = self.db.get_run(run.run_number).incidents if run is not None else []
        return {
            "state": str(self.planner.state),
            "allowed": self.planner.sm.allowed,
            "run": run.to_dict() if run else None,
            "incidents": incidents,
            "components": [c.summary(now) for c in self.roster.members.values()],
            "missing": [x.summary(now) for x in self.roster.missing.values()],
            "rejoin_grace": self.rejoin_grace,
            "counters": {**self.counters, **self.access.counters,
                         "db_write_errors": self.db.write_errors,
                         "db_runs_unwritten": len(self.db.pending)},
            "db_error": self.db.last_write_error if self.db.unwritten else "",
            "last_malformed": self.last_malformed,
            "last_refusal": self.access.last_refusal,
            "login_required": self.access.anonymous is None,
            "endpoint": self.endpoint,
            "pid": os.getpid(),
        }

    def authorise(self, identity: bytes, cmd: m.Command) -> Verdict:
        """The access check of one command (:mod:`.access`), and its audit entry.

        Requests that change something (above viewer) and every refusal go to the audit
        trail; an accepted one's entry gets its final result when that result is sent."""
        verdict = self.access.check(identity.hex(), cmd.user, cmd.token, cmd.command,
                                    cmd.params)
        if verdict.allowed and verdict.required <= Role.VIEWER:
            return verdict
        audit_id = self.db.add_audit(
            user=verdict.user, role=str(verdict.role) if verdict.role else None,
            client=_client_name(identity), command=verdict.what or cmd.command,
            params=cmd.params, accepted=verdict.allowed, message=verdict.reason)
        if verdict.allowed:
            self._audited[(identity, cmd.id)] = audit_id
            if len(self._audited) > 10_000:  # results that never came: forget the oldest
                del self._audited[next(iter(self._audited))]
        else:
            log.warning("refused: %s", verdict.reason)
        return verdict

    def invoke(self, requester: commands.Requester, cmd: m.Command, member: Member,
               action: str, params: dict[str, Any]) -> None:
        """Send an action to ``member``; its replies go back to ``requester`` under its id."""
        req = self._new_id()
        # Fail the action a little before the operator gives up, so that the operator hears
        # which action on which component timed out rather than a bare time-out.
        timeout = 0.9 * cmd.timeout if cmd.timeout else 3600.0
        self._invokes[req] = _Invoke((requester.identity, cmd.id), member.name, action,
                                     time.monotonic() + timeout)
        self.send(member.identity, m.Invoke(id=req, action=action, params=params))

    # --- components' replies ------------------------------------------------------------

    def _on_ack(self, identity: bytes, msg: m.Ack) -> None:
        effects = self.planner.ack(msg, time.monotonic())
        if effects is not None:
            self.apply(effects)
            return
        if msg.id in self._invokes:
            return  # the component accepted the action; the operator already has our ack
        self.counters["late_replies"] += 1
        log.info("dropped a late ack %s from %s", msg.id, self.roster.name_of(identity))

    def _on_progress(self, identity: bytes, msg: m.Progress) -> None:
        inv = self._invokes.get(msg.id)
        if inv is None:
            self.counters["late_replies"] += 1
            return
        self.send(inv.operator[0], m.Progress(id=inv.operator[1], data=msg.data))

    def _on_result(self, identity: bytes, msg: m.Result) -> None:
        inv = self._invokes.pop(msg.id, None)
        if inv is None:
            self.counters["late_replies"] += 1
            return
        self.send(inv.operator[0], m.Result(id=inv.operator[1], success=msg.success,
                                            message=msg.message, data=msg.data))

    # --- time ---------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_interval
            hb = m.Heartbeat(name="core", state=str(self.planner.state),
                             run_number=self.planner.run_number,
                             services=self.roster.services())
            for member in self.roster.members.values():
                self.send(member.identity, hb)
        for member in self.roster.silent(now, self.heartbeat_timeout):
            if self.roster.members.get(member.name) is not member:
                continue  # already taken out by an earlier loss this turn
            self.counters["components_lost"] += 1
            self._lose(member, f"component {member.name} ({member.role}) lost: no heartbeat "
                               f"for {now - member.last_seen:.2f} s", lost=True)
        for req, inv in list(self._invokes.items()):
            if now > inv.deadline:
                del self._invokes[req]
                self.send(inv.operator[0], m.Result(
                    id=inv.operator[1], success=False,
                    message=f"action {inv.action} on {inv.component} timed out"))
        self.apply(self.planner.tick(now))


def _open_incident(incidents: list[str], resolved: set[int], name: str,
                   role: str) -> int | None:
    """The index of the last incident not put right that is about component ``name``."""
    about = f"component {name} ({role}) "
    for i in range(len(incidents) - 1, -1, -1):
        # each text is "<time> <what>"; the what of a loss starts with "component NAME (ROLE)"
        if i not in resolved and incidents[i].partition(" ")[2].startswith(about):
            return i
    return None
