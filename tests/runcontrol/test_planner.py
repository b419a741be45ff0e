"""The pure transition planner, driven without sockets, database or clock.

The expectations are written from the specification (docs/runcontrol.md: "States",
"Transition order", "Heartbeats and losses", "Rejoining a run"), not from the planner's code:
the group order and the states each step leads to are spelled out again here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol import planner as p
from larpixdaq.runcontrol.roster import Roster
from larpixdaq.runcontrol.statemachine import State, TransitionRefused

# docs/runcontrol.md, "Transition order": groups by role; roles not listed go last.
ORDER = {
    "prepare": [{"storage"}, {"aggregator", "monitor"}, {"producer"}],
    "begin": [{"storage"}, {"aggregator"}, {"monitor"}, {"producer"}],
    "end": [{"producer"}, {"aggregator"}, {"monitor"}, {"storage"}],
    "reset": [{"producer"}, {"aggregator"}, {"monitor"}, {"storage"}],
}
# What a component's hook leaves it in (docs/runcontrol.md, "Writing a component").
LEADS_TO = {"prepare": "READY", "begin": "RUN", "end": "STOP", "reset": "STOP"}
# docs/runcontrol.md, "States": what each request may start from, what it carries out and
# where it ends when every component acknowledges.
ALLOWED = {State.STOP: {"prepare_run"}, State.READY: {"begin_run", "end_run"},
           State.RUN: {"end_run"}, State.ERROR: {"end_run", "reset"}}
CARRIES_OUT = {"prepare_run": "prepare", "begin_run": "begin", "end_run": "end",
               "reset": "reset"}
ENDS_IN = {"prepare_run": State.READY, "begin_run": State.RUN, "end_run": State.STOP,
           "reset": State.STOP}
STABLE = {State.STOP, State.READY, State.RUN, State.ERROR}

ROLES = {"st": "storage", "ag": "aggregator", "mo": "monitor", "p1": "producer",
         "p2": "producer", "lg": "log"}
GRACE = 2.0
ACK_TIMEOUT = 5.0
OPERATOR = b"op"


def group_index(transition: str, role: str) -> int:
    for i, roles in enumerate(ORDER[transition]):
        if role in roles:
            return i
    return len(ORDER[transition])


@dataclass
class Proc:
    """A component process as the test imagines it: it carries out what it is sent, in order."""

    name: str
    role: str
    pid: int
    state: str = "STOP"
    run_number: int | None = None
    inbox: list[p.SendStep] = field(default_factory=list)


@dataclass
class Watch:
    """One accepted request, followed until its final answer."""

    request: str
    op_id: str
    participants: set[str]
    steady: set[str]  # registered at the start and never lost since
    released: set[str] = field(default_factory=set)  # gone, and the run does not wait for it
    reached: set[str] = field(default_factory=set)  # sent a step in this transition
    told: list[int] = field(default_factory=list)  # group index of each step to a steady one


class Harness:
    """Roster + planner with a hand-moved clock, applying effects as the core would."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.roster = Roster(GRACE)
        ids = itertools.count(1)
        self.planner = p.Planner(self.roster, lambda: f"t-{next(ids)}", ack_timeout=ACK_TIMEOUT)
        self.procs: dict[str, Proc] = {}
        self.gone: dict[str, Proc] = {}
        self.pids = itertools.count(100)
        self.runs = itertools.count(1)
        self.open_run: int | None = None
        self.saved: tuple[State, int | None] = (State.STOP, None)
        self.watch: Watch | None = None
        self.finals: dict[str, int] = {}
        self.closed: list[tuple[int, State]] = []
        self.events: list[p.Notify] = []
        self.ops = itertools.count(1)
        self.acking: str | None = None  # the component whose ack is being taken

    # --- inputs, as the core gives them ---------------------------------------------------

    def register(self, name: str, role: str, *, state: str = "STOP",
                 run_number: int | None = None, host: str = "h") -> str | None:
        pid = next(self.pids)
        msg = m.Register(name=name, role=role, host=host, pid=pid, state=state,
                         run_number=run_number)
        admission = self.roster.admit(msg, name.encode() + str(pid).encode(), self.now,
                                      self.planner.run_number)
        if admission.refusal is not None:
            return admission.refusal
        assert admission.displaces is None and admission.reconnects is None
        member, missing = self.roster.add(msg, name.encode() + str(pid).encode(), self.now)
        self.procs[name] = Proc(name, role, pid, state, run_number)
        self.apply(self.planner.registered(member, missing is not None, self.now))
        return None

    def lose(self, name: str, lost: bool) -> None:
        proc = self.procs.pop(name)
        proc.inbox.clear()
        self.gone[name] = proc
        if self.watch is not None:
            self.watch.steady.discard(name)
        member = self.roster.remove(name)
        self.apply(self.planner.lost(member, f"{name} gone", self.now, lost=lost))
        if self.watch is not None and name not in self.roster.missing:
            self.watch.released.add(name)

    def request(self, request: str) -> bool:
        previous = self.planner.state
        try:
            self.planner.request(request)
        except TransitionRefused:
            return False
        if request == "prepare_run":
            self.open_run = next(self.runs)
            self.planner.open_run(m.RunInfo(run_number=self.open_run))
        op_id = f"op-{next(self.ops)}"
        self.watch = Watch(request, op_id,
                           set(self.roster.members) | set(self.roster.missing),
                           set(self.roster.members))
        self.apply(self.planner.start(request, previous, (OPERATOR, op_id), self.now))
        return True

    def ack(self, name: str, ok: bool) -> None:
        proc = self.procs[name]
        step = proc.inbox.pop(0)
        if ok:
            proc.state = LEADS_TO[step.step]
            ends = step.step in ("end", "reset")
            proc.run_number = None if ends else (step.run or {}).get("run_number")
        effects = self.planner.ack(m.Ack(id=step.id, ok=ok, message="no"), self.now)
        if effects is not None:
            self.acking = name
            self.apply(effects)
            self.acking = None

    def heartbeat(self, name: str) -> None:
        """What the core does with a heartbeat: take the reported state unless a step is out."""
        member = self.roster.members[name]
        if not self.planner.busy(name):
            member.state, member.run_number = self.procs[name].state, self.procs[name].run_number

    def tick(self, dt: float) -> None:
        self.now += dt
        self.apply(self.planner.tick(self.now))

    # --- effects --------------------------------------------------------------------------

    def apply(self, effects: list[p.Effect]) -> None:
        for e in effects:
            if isinstance(e, p.SendStep):
                self._sent(e)
            elif isinstance(e, p.Reply):
                assert self.watch is not None and e.to == (OPERATOR, self.watch.op_id)
                if e.final:
                    # docs: a transition fails into ERROR; a reset never fails.
                    assert not e.success and self.watch.request != "reset"
                    assert self.planner.state is State.ERROR
                    self._final()
            elif isinstance(e, p.SaveState):
                self.saved = (e.state, e.run_number)
            elif isinstance(e, p.Incident):
                assert e.run_number == self.open_run
                if e.hold is not None:
                    self.roster.missing[e.hold].incident = 0
            elif isinstance(e, p.RecordEnd | p.AddParticipant):
                assert e.run_number == self.open_run
            elif isinstance(e, p.Notify):
                # A component is caught up only outside transitions.
                assert e.kind != "caught-up" or self.watch is None
                self.events.append(e)
            elif isinstance(e, p.TransitionDone):
                self._done(e)

    def _sent(self, e: p.SendStep) -> None:
        # Steps go to registered components only.
        assert e.name in self.procs, e
        w = self.watch
        if w is None:
            # Late joiners are brought along only in a stable state, never mid-transition; a
            # catch-up under way goes on with its next step when the previous is acknowledged.
            assert self.planner.transition is None
            assert self.planner.state in (State.STOP, State.READY, State.RUN) or \
                e.name == self.acking
        else:
            transition = CARRIES_OUT[w.request]
            assert e.name in w.participants, "a transition tells only its participants"
            role = self.procs[e.name].role
            k = group_index(transition, role)
            w.reached.add(e.name)
            if e.name in w.steady:
                # A steady participant is told the transition's step and nothing else.
                assert e.step == transition, (e, w.request)
                w.told.append(k)
            if transition != "reset":
                # Every earlier group is through: each steady member there is at the target.
                for name in w.steady:
                    proc = self.procs[name]
                    if group_index(transition, proc.role) < k:
                        assert proc.state == LEADS_TO[transition], (e, name, proc)
        self.procs[e.name].inbox.append(e)

    def _final(self) -> None:
        w = self.watch
        self.finals[w.op_id] = self.finals.get(w.op_id, 0) + 1
        assert w.told == sorted(w.told), f"groups told out of order: {w.told}"
        self.watch = None

    def _done(self, e: p.TransitionDone) -> None:
        w = self.watch
        assert w is not None and e.to == (OPERATOR, w.op_id) and e.request == w.request
        assert e.state is ENDS_IN[w.request]
        self.saved = (e.state, None if e.closes is not None else self.open_run)
        if e.closes is not None:
            assert e.closes == self.open_run
            self.closed.append((e.closes, e.ended_from))
            self.open_run = None
        if w.request != "reset":
            # Completed: no participant was passed over while away (one missing when its
            # group's turn came is waited for; a reset alone goes on without), ...
            away = w.participants - set(self.procs) - w.released
            assert away <= w.reached, (w, self.procs)
            # ... and every steady participant carried the step out (no group skipped).
            target = LEADS_TO[CARRIES_OUT[w.request]]
            for name in w.steady:
                assert self.procs[name].state == target, (name, self.procs[name])
            groups = {group_index(CARRIES_OUT[w.request], self.procs[n].role)
                      for n in w.steady}
            assert groups <= set(w.told), (groups, w.told)
        self._final()


class PlannerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h = Harness()

    @precondition(lambda self: len(self.h.procs) + len(self.h.roster.missing) < len(ROLES))
    @rule(name=st.sampled_from(sorted(ROLES)))
    def register(self, name):
        if name in self.h.procs or name in self.h.roster.missing:
            return
        assert self.h.register(name, ROLES[name]) is None

    @precondition(lambda self: self.h.roster.missing)
    @rule(data=st.data(), resumed=st.booleans())
    def rejoin(self, data, resumed):
        name = data.draw(st.sampled_from(sorted(self.h.roster.missing)))
        old = self.h.gone[name]
        state, run = (old.state, old.run_number) if resumed else ("STOP", None)
        assert self.h.register(name, ROLES[name], state=state, run_number=run) is None
        assert name not in self.h.roster.missing

    @precondition(lambda self: self.h.roster.missing)
    @rule(data=st.data())
    def impostor(self, data):
        name = data.draw(st.sampled_from(sorted(self.h.roster.missing)))
        before = self.h.planner.state
        refusal = self.h.register(name, "other-role")
        assert refusal is not None and "kept for" in refusal
        assert name in self.h.roster.missing and self.h.planner.state is before

    @precondition(lambda self: self.h.procs)
    @rule(data=st.data(), lost=st.booleans())
    def lose(self, data, lost):
        name = data.draw(st.sampled_from(sorted(self.h.procs)))
        before = self.h.planner.state
        in_run = self.h.roster.members[name].state != "STOP" or lost
        self.h.lose(name, lost)
        if before in (State.READY, State.RUN, State.ERROR) and in_run:
            # docs: the run is held for the grace, the state does not change.
            assert self.h.planner.state is before
            assert name in self.h.roster.missing

    @precondition(lambda self: any(x.inbox for x in self.h.procs.values()))
    @rule(data=st.data(), ok=st.sampled_from([True, True, True, False]))
    def ack(self, data, ok):
        name = data.draw(st.sampled_from(sorted(n for n, x in self.h.procs.items() if x.inbox)))
        self.h.ack(name, ok)

    @precondition(lambda self: self.h.procs)
    @rule(data=st.data())
    def heartbeat(self, data):
        self.h.heartbeat(data.draw(st.sampled_from(sorted(self.h.procs))))

    @rule(request=st.sampled_from(sorted(CARRIES_OUT)))
    def request(self, request):
        state = self.h.planner.state
        accepted = self.h.request(request)
        assert accepted == (request in ALLOWED.get(state, set())), (request, state)

    @rule(dt=st.sampled_from([0.1, 1.0, GRACE + 0.5, ACK_TIMEOUT + 0.5]))
    def tick(self, dt):
        before = self.h.planner.state
        overdue = [x.name for x in self.h.roster.missing.values()
                   if x.deadline < self.h.now + dt]
        stalled = [x.name for x in self.h.roster.missing.values()
                   if x.deadline < self.h.now + dt and x.what == "lost"]
        steady = self.h.planner.transition is None and before in (State.READY, State.RUN)
        self.h.tick(dt)
        if overdue and steady and len(stalled) == len(overdue):
            # docs (rule 6): a stall is not a death; in a steady run a lost component's
            # grace running out keeps the name held and the state as it was.
            assert self.h.planner.state is before
            assert all(n in self.h.roster.missing for n in overdue)
        elif overdue and before not in (State.STOP, State.RESETTING):
            # docs: a component that does not register again within its grace while a
            # transition waits for it (or in ERROR) puts the run in ERROR.
            assert self.h.planner.state is State.ERROR

    # --- invariants, from the specification -----------------------------------------------

    @invariant()
    def every_state_change_is_saved(self):
        assert self.h.saved == (self.h.planner.state, self.h.planner.run_number)

    @invariant()
    def a_run_is_open_exactly_outside_stop(self):
        assert (self.h.planner.run is None) == (self.h.planner.state is State.STOP)
        assert self.h.planner.run_number == self.h.open_run

    @invariant()
    def transitional_states_only_during_a_transition(self):
        in_transition = self.h.planner.transition is not None
        assert in_transition == (self.h.planner.state not in STABLE)
        assert in_transition == (self.h.watch is not None)

    @invariant()
    def each_request_answered_once(self):
        assert all(n == 1 for n in self.h.finals.values())

    @invariant()
    def nobody_is_expected_back_without_a_run(self):
        if self.h.planner.state is State.STOP:
            assert not self.h.roster.missing
        assert not set(self.h.roster.missing) & set(self.h.roster.members)
        assert set(self.h.roster.members) == set(self.h.procs)

    @invariant()
    def runs_close_in_order(self):
        numbers = [n for n, _ in self.h.closed]
        assert numbers == sorted(set(numbers))


PlannerMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=40,
                                            deadline=None)
TestPlannerMachine = PlannerMachine.TestCase


def _steps(h: Harness, name: str) -> list[str]:
    return [x.step for x in h.procs[name].inbox]


def _run_to(h: Harness, *requests: str) -> None:
    for request in requests:
        assert h.request(request)
        while any(x.inbox for x in h.procs.values()):
            h.ack(next(n for n, x in h.procs.items() if x.inbox), True)


def test_begin_tells_one_group_after_the_other():
    h = Harness()
    for name in ("p1", "ag", "st", "mo"):
        h.register(name, ROLES[name])
    _run_to(h, "prepare_run")
    assert h.request("begin_run")
    told = {n: _steps(h, n) for n in h.procs}
    assert told == {"st": ["begin"], "ag": [], "mo": [], "p1": []}
    h.ack("st", True)
    assert _steps(h, "ag") == ["begin"] and _steps(h, "p1") == []
    h.ack("ag", True)
    h.ack("mo", True)
    assert _steps(h, "p1") == ["begin"]
    h.ack("p1", True)
    assert h.planner.state is State.RUN and h.watch is None


def test_a_late_joiner_is_brought_along_one_step_at_a_time():
    h = Harness()
    h.register("st", "storage")
    _run_to(h, "prepare_run", "begin_run")
    h.register("p1", "producer")
    assert _steps(h, "p1") == ["prepare"]  # begin only once prepare is acknowledged
    h.ack("p1", True)
    assert _steps(h, "p1") == ["begin"]
    h.ack("p1", True)
    assert h.procs["p1"].state == "RUN"
    assert [e.kind for e in h.events][-1] == "caught-up"


def _running_without_its_producer() -> Harness:
    """A storage and a producer in RUN; the producer was just lost (the run is held)."""
    h = Harness()
    h.register("st", "storage")
    h.register("p1", "producer")
    _run_to(h, "prepare_run", "begin_run")
    h.lose("p1", lost=True)
    return h


def test_end_waits_for_a_lost_producer_and_a_resumed_one_needs_only_end():
    h = _running_without_its_producer()
    assert h.planner.state is State.RUN and "p1" in h.roster.missing
    assert h.request("end_run")
    assert _steps(h, "st") == []  # storage waits: producers end first
    h.tick(1.0)
    h.register("p1", "producer", state="RUN", run_number=h.open_run)
    assert _steps(h, "p1") == ["end"]
    h.ack("p1", True)
    assert _steps(h, "st") == ["end"]
    h.ack("st", True)
    assert h.closed == [(1, State.RUN)] and h.planner.state is State.STOP


def test_a_grace_running_out_fails_the_transition_that_waits_for_it():
    h = _running_without_its_producer()
    assert h.request("end_run")
    h.tick(GRACE + 0.1)
    assert h.planner.state is State.ERROR and h.watch is None
    assert any("p1 (producer) lost and did not register again within 2 s" in e.message
               for e in h.events if e.kind == "error")


def test_a_stall_longer_than_the_grace_in_a_steady_run_is_held_on_and_resolved():
    h = _running_without_its_producer()
    h.tick(GRACE + 0.1)
    assert h.planner.state is State.RUN and "p1" in h.roster.missing
    overdue = [e for e in h.events if e.kind == "overdue"]
    assert len(overdue) == 1 and "p1 (producer) lost and did not register again within 2 s" \
        in overdue[0].message and "goes on" in overdue[0].message
    h.tick(GRACE + 0.1)
    h.tick(GRACE + 0.1)
    assert len([e for e in h.events if e.kind == "overdue"]) == 1  # told once
    assert h.planner.state is State.RUN and h.roster.missing["p1"].since == 1000.0
    # Back after three graces with its run intact: it takes its place (its incident is
    # resolved by the core) and the run ends as usual.
    assert h.register("p1", "producer", state="RUN", run_number=h.open_run) is None
    assert h.roster.missing == {}
    _run_to(h, "end_run")
    assert h.closed == [(1, State.RUN)]


def test_after_an_overdue_component_the_end_waits_one_grace_then_fails_naming_it():
    h = _running_without_its_producer()
    h.tick(GRACE + 0.1)
    assert h.request("end_run")
    h.tick(1.0)
    assert h.planner.state is State.STOPPING
    h.tick(GRACE)
    assert h.planner.state is State.ERROR
    assert any("p1 (producer) lost and did not register again within 2 s" in e.message
               for e in h.events if e.kind == "error")


def test_a_reset_does_not_wait_for_the_missing_and_closes_the_run_for_them():
    h = _running_without_its_producer()
    assert h.request("end_run")
    h.tick(GRACE + 0.1)
    assert h.planner.state is State.ERROR
    h.lose("st", lost=True)
    assert "st" in h.roster.missing  # held even in ERROR: it may still come back to end
    assert h.request("reset")
    assert h.planner.state is State.STOP and h.closed == [(1, State.ERROR)]
    assert h.roster.missing == {}
    assert h.register("st", "storage") is None  # a plain join now, nothing kept
    assert h.procs["st"].inbox == []
