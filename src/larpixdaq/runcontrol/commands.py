"""The operator commands the core takes: one table, one entry point.

:func:`handle` is the only way in: it receives who asks (:class:`Requester`) and the command,
has the core authorise it (the user's role against :mod:`.policy`; a refusal is the one-line
reason, and nothing else happens), looks the command up in :data:`COMMANDS` and answers an
unknown one with the list of known ones. Each handler answers through the context it is
given (the core), so this module holds no sockets of its own; what is pure about a
transition (may it start, in which order are components told) is the :class:`.Planner`'s
and the state machine's.

Every accepted command is acknowledged first and gets exactly one final ``result``. A handler
whose entry says ``parameter_errors`` has its ``KeyError``/``TypeError``/``ValueError``
turned into a failed result naming the command ("bad parameters"); any other exception goes
up to the core, which answers it as an internal error.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from larpixdaq.runcontrol import admitted
from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.access import Verdict
from larpixdaq.runcontrol.planner import Effect, Planner
from larpixdaq.runcontrol.roster import Member, Roster
from larpixdaq.runcontrol.rundb import RunDatabase, RunDatabaseError
from larpixdaq.runcontrol.statemachine import TransitionRefused

#: The parameters ``prepare_run`` takes (all text, all optional).
PREPARE_PARAMS = ("comment", "run_type", "data_dir", "config_hash", "config_snapshot")


@dataclass(frozen=True)
class Requester:
    """Who sent a command: the peer's identity on the core's socket and, once authorised,
    the user (None: anonymous) and their role."""

    identity: bytes
    user: str | None = None
    role: str | None = None


class CommandContext(Protocol):
    """What the handlers need of the core."""

    db: RunDatabase
    roster: Roster
    planner: Planner
    data_dir: str

    def send(self, identity: bytes, msg: m.Message) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def apply(self, effects: list[Effect]) -> None: ...

    def invoke(self, requester: Requester, cmd: m.Command, member: Member, action: str,
               params: dict[str, Any]) -> None: ...

    def clock(self) -> float: ...

    def authorise(self, identity: bytes, cmd: m.Command) -> Verdict: ...


Handler = Callable[[CommandContext, Requester, m.Command], None]


@dataclass(frozen=True)
class Command:
    """One entry of the table."""

    handler: Handler
    #: Parameter errors (KeyError, TypeError, ValueError) become a failed "bad parameters"
    #: result instead of an internal error.
    parameter_errors: bool = True


def reply(ctx: CommandContext, requester: Requester, cmd: m.Command, success: bool,
          message: str, data: dict | None = None) -> None:
    ctx.send(requester.identity, m.Result(id=cmd.id, success=success, message=message,
                                          data=data or {}))


def handle(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    """Carry out ``cmd`` for ``requester``: authorise, ack, then the handler's one result."""
    verdict = ctx.authorise(requester.identity, cmd)
    if not verdict.allowed:
        reply(ctx, requester, cmd, False, verdict.reason,
              {"refused": verdict.code, "user": verdict.user,
               "role": str(verdict.role) if verdict.role else None,
               "required": str(verdict.required)})
        return
    requester = Requester(requester.identity, verdict.user,
                          str(verdict.role) if verdict.role else None)
    entry = COMMANDS.get(cmd.command)
    if entry is None:
        known = ", ".join(sorted(COMMANDS))
        reply(ctx, requester, cmd, False, f"unknown command {cmd.command!r}; known: {known}")
        return
    ctx.send(requester.identity, m.Ack(id=cmd.id))
    if not entry.parameter_errors:
        entry.handler(ctx, requester, cmd)
        return
    try:
        entry.handler(ctx, requester, cmd)
    except (KeyError, TypeError, ValueError) as exc:
        reply(ctx, requester, cmd, False, f"bad parameters for {cmd.command}: {exc}")


# --- queries ----------------------------------------------------------------------------------


def _ping(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    reply(ctx, requester, cmd, True, "pong")


def _whoami(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    """Who the core takes the sender for (the web server checks a login with it)."""
    reply(ctx, requester, cmd, True,
          f"{requester.user or 'anonymous'} ({requester.role or 'no role'})",
          {"user": requester.user, "role": requester.role})


def _audit(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    limit = cmd.params.get("limit", 100)
    user = cmd.params.get("user")
    entries = ctx.db.list_audit(limit=int(limit) if limit else None,
                                user=str(user) if user else None,
                                refused_only=bool(cmd.params.get("refused")))
    reply(ctx, requester, cmd, True,
          f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}",
          {"entries": entries})


def _status(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    st = ctx.status()
    run = f", run {st['run']['run_number']}" if st["run"] else ""
    missing = ", ".join(x["name"] for x in st["missing"])
    missing = f", missing: {missing}" if missing else ""
    reply(ctx, requester, cmd, True,
          f"{st['state']}{run}, {len(st['components'])} component(s){missing}", st)


def _clients(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    now = ctx.clock()
    comps = [c.summary(now) for c in ctx.roster.members.values()]
    reply(ctx, requester, cmd, True, f"{len(comps)} component(s)", {"components": comps})


def _actions(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    acts = {c.name: c.actions for c in ctx.roster.members.values()}
    reply(ctx, requester, cmd, True, f"{sum(map(len, acts.values()))} action(s)",
          {"actions": acts})


def _runs(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    limit = cmd.params.get("limit")
    runs = [r.to_dict() for r in ctx.db.list_runs(limit=int(limit) if limit else None)]
    reply(ctx, requester, cmd, True, f"{len(runs)} run(s)", {"runs": runs})


def _run(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    number = int(cmd.params["run_number"])
    try:
        rec = ctx.db.get_run(number)
    except RunDatabaseError as exc:
        reply(ctx, requester, cmd, False, str(exc))
        return
    reply(ctx, requester, cmd, True, f"run {number}", {"run": rec.to_dict()})


# --- actions on components --------------------------------------------------------------------


def _invoke(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    name = cmd.params.get("component")
    action = cmd.params.get("action")
    params = cmd.params.get("params") or {}
    members = ctx.roster.members
    member = members.get(name) if isinstance(name, str) else None
    if member is None:
        reply(ctx, requester, cmd, False, f"no component named {name!r}; registered: "
              f"{', '.join(sorted(members)) or 'none'}")
        return
    if action not in member.actions:
        reply(ctx, requester, cmd, False, f"component {name} has no action {action!r}; "
              f"it offers: {', '.join(sorted(member.actions)) or 'none'}")
        return
    if not isinstance(params, dict):
        reply(ctx, requester, cmd, False, "invoke params must be a map of name -> value")
        return
    ctx.invoke(requester, cmd, member, action, params)


# --- transitions ------------------------------------------------------------------------------


def _transition(ctx: CommandContext, requester: Requester, cmd: m.Command) -> None:
    """A run-state request: checked by the state machine, carried out by the planner."""
    planner = ctx.planner
    previous = planner.state
    if cmd.command == "prepare_run":
        wrong = sorted(k for k in PREPARE_PARAMS
                       if not isinstance(cmd.params.get(k), (str, type(None))))
        unknown = sorted(set(cmd.params) - set(PREPARE_PARAMS))
        if wrong or unknown:
            reply(ctx, requester, cmd, False,
                  f"prepare_run parameters {', '.join(wrong + unknown)} are not accepted; "
                  f"give text for {', '.join(PREPARE_PARAMS)}")
            return
    if cmd.command == "end_run" and (
            set(cmd.params) - {"reason"} or not isinstance(cmd.params.get("reason", ""), str)):
        reply(ctx, requester, cmd, False, "end_run takes only `reason`, as text")
        return
    try:
        new = planner.request(cmd.command)
    except TransitionRefused as exc:
        reply(ctx, requester, cmd, False, str(exc),
              {"state": str(exc.state), "allowed": exc.allowed})
        return
    if cmd.command == "prepare_run":
        p = cmd.params
        try:
            rec = ctx.db.allocate_run(
                run_type=p.get("run_type") or "physics", comment=p.get("comment") or "",
                data_dir=p.get("data_dir") or ctx.data_dir,
                config_hash=p.get("config_hash"), config_snapshot=p.get("config_snapshot"),
                state=str(new),
            )
        except RunDatabaseError as exc:  # no room for the run number: refused, with why
            planner.undo_request(previous)
            reply(ctx, requester, cmd, False, str(exc), {"state": str(previous)})
            return
        except Exception:
            planner.undo_request(previous)  # nothing was started
            raise
        # The streams that may write into this run: the producers registered now (see
        # admitted.py); kept with the run so a restarted core tells the same table.
        table = admitted.mint({c.name: c.io_group for c in ctx.roster.members.values()
                               if c.role == admitted.PRODUCER_ROLE}, secrets.randbits)
        ctx.db.set_admitted(rec.run_number, table)
        planner.open_run(m.RunInfo(
            run_number=rec.run_number, run_type=rec.run_type, comment=rec.comment,
            data_dir=rec.data_dir, start_time=rec.start_time, config_hash=rec.config_hash,
            admitted=table))
        ctx.db.set_participants(rec.run_number,
                                {c.name: c.role for c in ctx.roster.members.values()})
    elif cmd.command == "begin_run":
        ctx.db.set_begin_time(planner.run_number)
    if planner.run_number is not None:  # who asked, kept in the run record
        ctx.db.set_by(planner.run_number, cmd.command, requester.user)
    ctx.apply(planner.start(cmd.command, previous, (requester.identity, cmd.id), ctx.clock(),
                            reason=str(cmd.params.get("reason") or "")))


COMMANDS: dict[str, Command] = {
    "prepare_run": Command(_transition, parameter_errors=False),
    "begin_run": Command(_transition, parameter_errors=False),
    "end_run": Command(_transition, parameter_errors=False),
    "reset": Command(_transition, parameter_errors=False),
    "status": Command(_status),
    "clients": Command(_clients),
    "actions": Command(_actions),
    "runs": Command(_runs),
    "run": Command(_run),
    "invoke": Command(_invoke),
    "ping": Command(_ping),
    "whoami": Command(_whoami),
    "audit": Command(_audit),
}
