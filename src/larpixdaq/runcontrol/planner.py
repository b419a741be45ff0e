"""How the core carries out transitions and brings components to its state: pure steps.

No sockets, no clock, no database. The core feeds the :class:`Planner` what happened (an
operator's request was accepted, an ack, a registration, a loss, a tick with ``now``) and gets
back a list of *effects*, small frozen values it applies in order: messages to send, rows for
the run database, events for operators. The run state itself changes only through the table
in :mod:`.statemachine`; the names kept for missing components live in the :class:`.Roster`.

The rules this file keeps:

1. One mechanism moves a component: a *job*, a list of component transitions (``prepare``,
   ``begin``, ``end``, ``reset``) sent one at a time, the next only after the previous is
   acknowledged. A transition in progress gives each member of the current group a job of
   one step (or, for a member that came back, the steps from :func:`.catch_up_steps`); a
   component that is not in the core's stable state gets a job of its own (*catch-up*).
   A component has at most one job.
2. A transition tells its groups in the order of :func:`.transition_groups`; a group is told
   only when every member of the previous one acknowledged or came back and caught up. A
   member that is missing (in its rejoin grace) is waited for, except by a ``reset``.
3. A refusal, a group's ``ack_timeout`` or a grace running out fails the transition into
   ERROR; a ``reset`` instead notes the failure and goes on (it is the way out).
4. Starting a transition cancels every catch-up; catch-up starts only in a stable state with
   no transition in progress. A catch-up that fails is an incident, never a state change.
5. A loss during a run holds the run for the grace (rule 4 of :mod:`.roster`) instead of
   failing it, except during a reset or with no grace.
6. A stall is not a death: the grace of a *lost* component (silent: stopped, frozen, or
   killed and being restarted) running out while the run is steady (READY or RUN, no
   transition) tells the operators once (``overdue``) and keeps holding the name, a grace
   at a time, so a component that comes back later with its data intact still resolves its
   incident; the run goes on (the data path holds its data). A grace running out while a
   transition waits for the component, in ERROR, or for one that left (said goodbye) or
   never came back after a core restart, is a fault, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.roster import Member, Missing, Roster
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
    catch_up_steps,
    transition_groups,
)

#: Who asked for a transition: (peer identity, request id), where its progress and result go.
Requester = tuple[bytes, str]

# --- effects: what the core is to do, in order ------------------------------------------------


@dataclass(frozen=True)
class SendStep:
    """Send ``transition`` message ``id`` to the member named ``name``."""

    name: str
    id: str
    step: str
    run: dict[str, Any] | None


@dataclass(frozen=True)
class Reply:
    """Send a progress (``final`` False) or the final result to whoever asked."""

    to: Requester
    data: dict[str, Any]
    final: bool = False
    success: bool = True
    message: str = ""


@dataclass(frozen=True)
class Notify:
    """Tell every operator (an ``event``)."""

    kind: str
    message: str
    data: dict[str, Any]


@dataclass(frozen=True)
class SaveState:
    """Save the core's state and run in the run database."""

    state: State
    run_number: int | None


@dataclass(frozen=True)
class Incident:
    """Add an incident to the run; ``hold`` names the missing entry to note its index in."""

    run_number: int
    reason: str
    hold: str | None = None
    resolution: str | None = None  # recorded as resolved at once, with this resolution


@dataclass(frozen=True)
class RecordEnd:
    """A component's final counters and files, from its end (or reset) ack."""

    run_number: int
    name: str
    role: str
    counters: dict[str, Any]
    files: list[str]


@dataclass(frozen=True)
class AddParticipant:
    """A component that caught up takes part in the run."""

    run_number: int
    name: str
    role: str


@dataclass(frozen=True)
class TransitionDone:
    """A transition completed: close the run (``closes``) if any, save, answer, announce."""

    request: str
    to: Requester | None
    state: State
    elapsed: float
    failures: tuple[str, ...]
    closes: int | None  # the run number to close, with the exit status from the fields below
    ended_from: State
    went_through_error: bool
    run: dict[str, Any] | None  # the run still open after it, if any
    reason: str = ""  # why the operator ended the run (end_run's ``reason``), kept with it


Effect = SendStep | Reply | Notify | SaveState | Incident | RecordEnd | AddParticipant | \
    TransitionDone


# --- the planner ----------------------------------------------------------------------------


@dataclass
class _Job:
    name: str
    id: str
    step: str
    rest: list[str]
    deadline: float  # for a catch-up; a transition's jobs share the transition's deadline
    in_transition: bool


@dataclass
class _Transition:
    request: str
    transition: str
    to: Requester | None
    groups: list[list[str]]
    started: float
    previous: State
    reason: str = ""
    index: int = -1
    deadline: float = 0.0
    failures: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    rejoining: set[str] = field(default_factory=set)  # members of this group still missing
    rejoined: set[str] = field(default_factory=set)  # later members to bring with catch-up


class Planner:
    """The run state, the transition in progress and every component's job."""

    def __init__(self, roster: Roster, new_id: Callable[[], str], *, ack_timeout: float,
                 state: State = State.STOP, run: m.RunInfo | None = None,
                 run_failed: bool = False) -> None:
        self.roster = roster
        self.new_id = new_id
        self.ack_timeout = ack_timeout
        self.sm = RunStateMachine(state)
        self.run = run
        #: The open run went through ERROR (its exit status is then ``failed``).
        self.run_failed = run_failed
        self._transition: _Transition | None = None
        self._jobs: dict[str, _Job] = {}

    # --- what the core asks -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.sm.state

    @property
    def run_number(self) -> int | None:
        return self.run.run_number if self.run else None

    @property
    def transition(self) -> str | None:
        return self._transition.transition if self._transition else None

    def busy(self, name: str) -> bool:
        """A step is out to ``name``: its own reports of its state are not taken meanwhile."""
        return any(j.name == name for j in self._jobs.values())

    def waiting_for(self) -> dict[str, str]:
        """Request id -> member, for the transition's steps not yet acknowledged."""
        return {j.id: j.name for j in self._jobs.values() if j.in_transition}

    def next_deadline(self) -> float | None:
        tr = self._transition
        if tr is not None and self.waiting_for():
            return tr.deadline
        return None

    # --- inputs -----------------------------------------------------------------------------

    def request(self, name: str) -> State:
        """An operator's transition request by name; raises :class:`.TransitionRefused`."""
        return self.sm.request(name)

    def undo_request(self, previous: State) -> None:
        """The request could not be carried out at all (nothing was started)."""
        self.sm = RunStateMachine(previous)

    def open_run(self, run: m.RunInfo) -> None:
        self.run = run
        self.run_failed = False

    def start(self, request: str, previous: State, to: Requester | None, now: float,
              reason: str = "") -> list[Effect]:
        """Carry out the transition the accepted ``request`` entered (rule 2).

        ``reason``: why the operator ends the run, kept with it when it closes.
        """
        out: list[Effect] = [self._save()]
        transition = COMPONENT_TRANSITION[self.sm.state]
        self._jobs.clear()  # a transition supersedes any catch-up (rule 4)
        roles = {x.name: x.role for x in self.roster.missing.values()}
        roles.update({x.name: x.role for x in self.roster.members.values()})
        self._transition = _Transition(
            request=request, transition=transition, to=to,
            groups=transition_groups(transition, roles), started=now, previous=previous,
            reason=reason)
        self._advance(now, out)
        return out

    def ack(self, msg: m.Ack, now: float) -> list[Effect] | None:
        """A component's ack; None when it answers no step of ours."""
        job = self._jobs.pop(msg.id, None)
        if job is None:
            return None
        out: list[Effect] = []
        member = self.roster.members.get(job.name)
        was_in = member.run_number if member is not None else None
        if member is not None and msg.ok:
            member.state = COMPONENT_STATE_AFTER[job.step]
            in_run = self.run is not None and member.state != State.STOP
            member.run_number = self.run.run_number if in_run else None
        if job.in_transition:
            self._transition_ack(job, member, was_in, msg, now, out)
        elif member is not None:
            self._catch_up_ack(job, member, msg, now, out)
        return out

    def registered(self, member: Member, was_missing: bool, now: float) -> list[Effect]:
        """A component registered; ``was_missing``: it took a missing entry of the run."""
        out: list[Effect] = []
        tr = self._transition
        if was_missing and tr is not None:
            if member.name in tr.rejoining:  # its group is waiting for it
                tr.rejoining.discard(member.name)
                self._transition_catch_up(member, now, out)
                self._maybe_next_group(now, out)
            elif any(member.name in g for g in tr.groups[tr.index + 1:]):
                tr.rejoined.add(member.name)  # brought along when its group's turn comes
        self._catch_up(member, now, out)
        return out

    def reconnected(self, name: str) -> None:
        """The same process registered again: its catch-up starts afresh from what it says."""
        for job in [j for j in self._jobs.values() if j.name == name and not j.in_transition]:
            del self._jobs[job.id]

    def lost(self, member: Member, reason: str, now: float, *, lost: bool,
             what: str | None = None) -> list[Effect]:
        """``member`` (already out of the roster) was lost, left or was replaced (rule 5)."""
        out: list[Effect] = []
        tr = self._transition
        mine = [j for j in self._jobs.values() if j.name == member.name]
        for job in mine:
            del self._jobs[job.id]
        in_run = self.run is not None and self.sm.state in RUN_OPEN_STATES
        waited_on = tr is not None and any(j.in_transition for j in mine)
        affects_run = in_run and (waited_on or member.state != State.STOP or lost)
        grace = self.roster.rejoin_grace
        hold = affects_run and grace > 0 and not (tr is not None and tr.transition == "reset")
        data: dict[str, Any] = {"component": member.name, "role": member.role}
        message = reason
        if hold:
            message += (f"; run {self.run.run_number} is held up to {grace:g} s "
                        "for it to register again")
            data.update(run_number=self.run.run_number, rejoin_grace=grace)
        out.append(Notify("lost" if lost else "left", message, data))
        if hold:
            self.roster.hold(member.name, member.role, now, what or ("lost" if lost else "left"),
                             key=member.key)
            out.append(Incident(self.run.run_number, reason, hold=member.name))
            if waited_on:
                tr.rejoining.add(member.name)
                self._tell_waiting([member.name], now, out)
            return out
        if waited_on:
            if self.run is not None:
                out.append(Incident(self.run.run_number, reason))
            self._fail(reason, out)
            if self._transition is tr and not self.waiting_for():
                self._advance(now, out)
            return out
        if affects_run:
            out.append(Incident(self.run.run_number, reason))
            self._fault(reason, out)
        return out

    def tick(self, now: float) -> list[Effect]:
        """Time passed: time-outs of the transition and of catch-ups, graces running out."""
        out: list[Effect] = []
        tr = self._transition
        waiting = self.waiting_for()
        if tr is not None and waiting and now > tr.deadline:
            members = self.roster.members
            described = ", ".join(
                f"{members[n].role if n in members else '?'} {n}"
                for n in sorted(waiting.values()))
            reason = (f"{described} did not acknowledge {tr.transition} within "
                      f"{self.ack_timeout:g} s")
            for req in waiting:
                del self._jobs[req]
            self._fail(reason, out)
            if self._transition is tr:  # a reset carries on with the next group
                self._advance(now, out)
        for job in [j for j in self._jobs.values() if not j.in_transition and now > j.deadline]:
            del self._jobs[job.id]
            member = self.roster.members.get(job.name)
            if member is not None:
                self._catch_up_failed(member, f"{member.role} {member.name} did not acknowledge "
                                              f"{job.step} within {self.ack_timeout:g} s", out)
        expired = self.roster.expired(now)
        if expired:
            self._grace_expired(expired, now, out)
        return out

    def alarm(self, member: Member, message: str, data: dict[str, Any]) -> list[Effect]:
        """A component cannot carry on with the run (storage cannot write): the operators
        hear it at once; an open run records it and fails (ERROR) with the cause."""
        reason = f"{member.role} {member.name}: {message}"
        out: list[Effect] = [Notify("alarm", reason, {**data, "component": member.name,
                                                      "role": member.role})]
        if self.run is not None:
            out.append(Incident(self.run.run_number, reason))
            self._fault(reason, out)
        return out

    def notice(self, member: Member, message: str, data: dict[str, Any]) -> list[Effect]:
        """A component tells what the run's data must be read with (a hole in a board's
        data): the operators hear it; an open run records it as an incident that needs no
        action (resolved as it is recorded). The run goes on."""
        reason = f"{member.role} {member.name}: {message}"
        out: list[Effect] = [Notify("incident", reason, {**data, "component": member.name,
                                                         "role": member.role})]
        if self.run is not None:
            out.append(Incident(self.run.run_number, reason,
                                resolution="recorded (the data around it is in the files)"))
        return out

    def fault(self, reason: str) -> list[Effect]:
        """Something went wrong outside the components' answers (rule 3, or the table's Fault)."""
        out: list[Effect] = []
        self._fault(reason, out)
        return out

    # --- one step mechanism (rule 1) ---------------------------------------------------------

    def _start_job(self, member: Member, steps: list[str], in_transition: bool, now: float,
                   out: list[Effect]) -> None:
        job = _Job(member.name, "", "", list(steps), 0.0, in_transition)
        self._send_next(job, member, now, out)

    def _send_next(self, job: _Job, member: Member, now: float, out: list[Effect]) -> None:
        job.step = job.rest.pop(0)
        job.id = self.new_id()
        job.deadline = now + self.ack_timeout
        self._jobs[job.id] = job
        run = self.run.to_dict() if self.run else None
        if job.step == "end" and member.run_number is not None and (
            self.run is None or member.run_number != self.run.run_number
        ):
            run = {"run_number": member.run_number}  # ends the run it is in, not ours
        out.append(SendStep(member.name, job.id, job.step, run))

    def _transition_ack(self, job: _Job, member: Member | None, was_in: int | None,
                        msg: m.Ack, now: float, out: list[Effect]) -> None:
        tr = self._transition
        if job.step == tr.transition or (self.run is not None
                                         and was_in == self.run.run_number):
            self._record_end(job, member, msg, out)
        if msg.ok:
            if member is not None and job.rest:  # a returning member, more to do
                tr.deadline = now + self.ack_timeout
                self._send_next(job, member, now, out)
                return
            tr.done.append(job.name)
        else:
            role = member.role if member else "?"
            reason = f"{role} {job.name} refused {job.step}: {msg.message}"
            if tr.transition != "reset":
                self._fail(reason, out)
                return
            tr.failures.append(reason)
        self._maybe_next_group(now, out)

    def _catch_up_ack(self, job: _Job, member: Member, msg: m.Ack, now: float,
                      out: list[Effect]) -> None:
        if not msg.ok:
            self._catch_up_failed(member, f"{member.role} {member.name} refused {job.step} "
                                          f"while joining: {msg.message}", out)
        elif job.rest:
            self._send_next(job, member, now, out)
        elif job.step != "end":
            if self.run is not None:
                out.append(AddParticipant(self.run.run_number, member.name, member.role))
            out.append(Notify("caught-up", f"component {member.name} brought to {member.state}",
                              {"component": member.name, "state": member.state}))

    def _record_end(self, job: _Job, member: Member | None, msg: m.Ack,
                    out: list[Effect]) -> None:
        if job.step not in ("end", "reset") or self.run is None:
            return
        counters = msg.data.get("counters")
        files = msg.data.get("files")
        if isinstance(counters, dict) or isinstance(files, list):
            out.append(RecordEnd(
                self.run.run_number, job.name, member.role if member else "?",
                counters if isinstance(counters, dict) else {},
                [str(f) for f in files] if isinstance(files, list) else []))

    # --- catch-up outside transitions (rule 4) ------------------------------------------------

    def _catch_up(self, member: Member, now: float, out: list[Effect]) -> None:
        if self._transition is not None or self.busy(member.name):
            return
        steps = catch_up_steps(member.state, member.run_number, self.sm.state, self.run_number)
        if steps:
            self._start_job(member, steps, False, now, out)

    def _catch_up_failed(self, member: Member, reason: str, out: list[Effect]) -> None:
        if self.run is not None:
            out.append(Incident(self.run.run_number, reason))
        out.append(Notify("error", reason, {"component": member.name}))

    # --- a transition, group by group (rules 2, 3) -------------------------------------------

    def _advance(self, now: float, out: list[Effect]) -> None:
        tr = self._transition
        tr.index += 1
        awaits = tr.transition != "reset"  # a reset never waits for anyone to come back
        members, missing = self.roster.members, self.roster.missing
        while tr.index < len(tr.groups):
            group = [n for n in tr.groups[tr.index] if n in members]
            absent = [n for n in tr.groups[tr.index]
                      if awaits and n not in members and n in missing]
            if group or absent:
                break
            tr.index += 1
        else:
            self._complete(now, out)
            return
        tr.deadline = now + self.ack_timeout
        tr.rejoining = set(absent)
        for name in group:
            if name in tr.rejoined:
                self._transition_catch_up(members[name], now, out)
            else:
                self._start_job(members[name], [tr.transition], True, now, out)
        if absent:
            self._tell_waiting(absent, now, out)
        self._maybe_next_group(now, out)

    def _transition_catch_up(self, member: Member, now: float, out: list[Effect]) -> None:
        """Bring a member that came back to where the transition takes the DAQ.

        It may be a fresh process (STOP) or one that resumed the run (storage, from its
        journal): :func:`.catch_up_steps` gives what it needs, which may be nothing.
        """
        tr = self._transition
        target = TRANSITION_TARGET[tr.transition]
        run_number = self.run.run_number if self.run and target is not State.STOP else None
        steps = catch_up_steps(member.state, member.run_number, target, run_number)
        if not steps:
            tr.done.append(member.name)
            return
        tr.deadline = now + self.ack_timeout
        self._start_job(member, steps, True, now, out)

    def _maybe_next_group(self, now: float, out: list[Effect]) -> None:
        tr = self._transition
        if tr is None or self.waiting_for() or tr.rejoining:
            return
        if tr.to:
            out.append(Reply(tr.to, {"transition": tr.transition, "group": tr.index + 1,
                                     "groups": len(tr.groups), "done": list(tr.done)}))
        self._advance(now, out)

    def _tell_waiting(self, names: list[str], now: float, out: list[Effect]) -> None:
        tr = self._transition
        entries = [self.roster.missing[n] for n in sorted(names)]
        waits = [f"{x.role} {x.name} ({x.what}; up to {max(0.0, x.deadline - now):.1f} s more)"
                 for x in entries]
        text = f"{tr.transition} waits for {', '.join(waits)} to register again"
        if tr.to:
            out.append(Reply(tr.to, {"transition": tr.transition, "group": tr.index + 1,
                                     "groups": len(tr.groups), "waiting": text,
                                     "components": sorted(names)}))

    def _complete(self, now: float, out: list[Effect]) -> None:
        tr = self._transition
        self._transition = None
        new = self._handle(Completed())
        closes = None
        if new is State.STOP and self.run is not None:
            closes = self.run.run_number
            self.run = None
            self.roster.release_all()  # nobody is expected back into a closed run
        out.append(TransitionDone(
            request=tr.request, to=tr.to, state=new, elapsed=now - tr.started,
            failures=tuple(tr.failures), closes=closes, ended_from=tr.previous,
            went_through_error=self.run_failed,
            run=self.run.to_dict() if self.run is not None else None, reason=tr.reason))
        out.append(Notify("state", f"state {new}", {"state": str(new)}))
        for member in list(self.roster.members.values()):
            self._catch_up(member, now, out)

    def _fail(self, reason: str, out: list[Effect]) -> None:
        tr = self._transition
        if tr.transition == "reset":
            tr.failures.append(reason)  # a reset goes on regardless; reported at the end
            return
        self._transition = None
        for req in self.waiting_for():
            del self._jobs[req]
        self._handle(Failed(reason))
        if self.run is not None:
            out.append(Incident(self.run.run_number, f"{tr.transition} failed: {reason}"))
        out.append(self._save())
        message = f"{tr.request} failed: {reason}; state is now {self.sm.state}"
        if tr.to:
            out.append(Reply(tr.to, {"state": str(self.sm.state), "reason": reason},
                             final=True, success=False, message=message))
        out.append(Notify("error", message, {"state": str(self.sm.state)}))

    def _fault(self, reason: str, out: list[Effect]) -> None:
        if self._transition is not None:
            self._fail(reason, out)
            return
        before = self.sm.state
        self._handle(Fault(reason))
        out.append(self._save())
        if self.sm.state is not before:
            out.append(Notify("error", f"{reason}; state is now {self.sm.state}",
                              {"state": str(self.sm.state)}))

    def _grace_expired(self, expired: list[Missing], now: float, out: list[Effect]) -> None:
        """Participants that did not come back in time: held on in a steady run (rule 6),
        otherwise ERROR, naming them."""
        if self.run is not None and self._transition is None and self.sm.state in (
                State.READY, State.RUN):
            stalled = [x for x in expired if x.what == "lost"]
            self._overdue(stalled, now, out)
            expired = [x for x in expired if x.what != "lost"]
            if not expired:
                return
        reasons = []
        absent = sorted(x.name for x in expired if x.after_restart)
        if absent:
            reasons.append(f"component(s) {', '.join(absent)} did not register again after "
                           "the core restarted")
        for x in sorted((x for x in expired if not x.after_restart), key=lambda x: x.name):
            reasons.append(f"component {x.name} ({x.role}) {x.what} and did not register "
                           f"again within {self.roster.rejoin_grace:g} s")
        reason = "; ".join(reasons)
        if self.run is None:
            return
        tr = self._transition
        if tr is not None:
            tr.rejoining.difference_update(x.name for x in expired)
            if tr.transition == "reset":
                tr.failures.append(reason)
                return
            self._fail(reason, out)  # records the incident, tells everyone
            return
        out.append(Incident(self.run.run_number, reason))
        before = self.sm.state
        self._fault(reason, out)
        if self.sm.state is before:  # already in ERROR: still say who is not coming back
            out.append(Notify("error", f"{reason}; state is {self.sm.state}",
                              {"state": str(self.sm.state),
                               "components": [x.name for x in expired]}))

    def _overdue(self, expired: list[Missing], now: float, out: list[Effect]) -> None:
        """Rule 6: keep each name for another grace; tell the operators the first time."""
        assert self.run is not None
        grace = self.roster.rejoin_grace
        for x in sorted(expired, key=lambda x: x.name):
            kept = self.roster.hold(x.name, x.role, now, x.what)
            kept.since, kept.incident, kept.overdue = x.since, x.incident, True
            if x.overdue:
                continue
            how = f"{x.what} and did not register again within {grace:g} s"
            message = (f"component {x.name} ({x.role}) {how}; run {self.run.run_number} goes "
                       "on, its incident is resolved if it comes back (a stalled process) "
                       "and the run's end waits for it at most the grace")
            out.append(Notify("overdue", message, {
                "component": x.name, "role": x.role, "run_number": self.run.run_number,
                "missing_s": round(now - x.since, 3)}))

    # --- the state --------------------------------------------------------------------------

    def _handle(self, event: Completed | Failed | Fault) -> State:
        new = self.sm.handle(event)
        if new is State.ERROR:
            self.run_failed = True
        return new

    def _save(self) -> SaveState:
        if self.sm.state is State.ERROR:
            self.run_failed = True
        return SaveState(self.sm.state, self.run_number)
