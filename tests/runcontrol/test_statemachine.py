"""The pure run state machine: table, refusals, ordering and catch-up."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from larpixdaq.runcontrol.statemachine import (
    COMPONENT_HOOKS,
    COMPONENT_STATE_AFTER,
    EXIT_STATUSES,
    LOSS_COUNTERS,
    REQUESTS,
    STABLE_STATES,
    TRANSITION_TARGET,
    TRANSITIONS,
    BeginRun,
    Completed,
    EndRun,
    Failed,
    Fault,
    InvalidEvent,
    PrepareRun,
    RunStateMachine,
    State,
    TransitionRefused,
    allowed_requests,
    catch_up_steps,
    component_hooks,
    run_exit_status,
    run_losses,
    transition_groups,
)


def test_full_cycle():
    sm = RunStateMachine()
    assert sm.state is State.STOP
    assert sm.request("prepare_run") is State.PREPARING
    assert sm.handle(Completed()) is State.READY
    assert sm.request("begin_run") is State.STARTING
    assert sm.handle(Completed()) is State.RUN
    assert sm.request("end_run") is State.STOPPING
    assert sm.handle(Completed()) is State.STOP


def test_stop_to_run_refused_with_clear_message():
    sm = RunStateMachine()
    with pytest.raises(TransitionRefused) as err:
        sm.request("begin_run")
    assert "cannot begin_run in state STOP" in str(err.value)
    assert "prepare_run" in str(err.value)
    assert sm.state is State.STOP


def test_unknown_request_refused():
    with pytest.raises(TransitionRefused, match="cannot dance"):
        RunStateMachine().request("dance")


def test_request_during_transition_refused():
    sm = RunStateMachine()
    sm.request("prepare_run")
    with pytest.raises(TransitionRefused, match="none"):
        sm.request("end_run")


def test_failure_goes_to_error_and_reset_recovers():
    sm = RunStateMachine(State.READY)
    sm.request("begin_run")
    assert sm.handle(Failed("storage st did not answer")) is State.ERROR
    assert allowed_requests(State.ERROR) == ["end_run", "reset"]
    sm.request("reset")
    assert sm.handle(Failed("x")) is State.STOP


def test_fault_in_stop_changes_nothing_and_in_run_errors():
    assert RunStateMachine(State.STOP).handle(Fault("lost")) is State.STOP
    assert RunStateMachine(State.RUN).handle(Fault("lost")) is State.ERROR


def test_internal_event_invalid():
    with pytest.raises(InvalidEvent):
        RunStateMachine().handle(Completed())


def test_transition_groups_order():
    roles = {"p1": "producer", "p0": "producer", "agg": "aggregator", "mon": "monitor",
             "st": "storage", "log": "log"}
    assert transition_groups("prepare", roles) == [["st"], ["agg", "mon"], ["p0", "p1"], ["log"]]
    assert transition_groups("begin", roles) == [["st"], ["agg"], ["mon"], ["p0", "p1"], ["log"]]
    assert transition_groups("end", roles) == [["p0", "p1"], ["agg"], ["mon"], ["st"], ["log"]]
    assert transition_groups("end", {}) == []
    with pytest.raises(ValueError, match="unknown transition"):
        transition_groups("jump", roles)


@pytest.mark.parametrize(
    ("comp", "comp_run", "core", "core_run", "steps"),
    [
        ("STOP", None, State.STOP, None, []),
        ("STOP", None, State.READY, 3, ["prepare"]),
        ("STOP", None, State.RUN, 3, ["prepare", "begin"]),
        ("READY", 3, State.RUN, 3, ["begin"]),
        ("RUN", 3, State.RUN, 3, []),
        ("RUN", 2, State.RUN, 3, ["end", "prepare", "begin"]),
        ("RUN", 3, State.STOP, None, ["end"]),
        ("RUN", 3, State.READY, 3, ["end", "prepare"]),
        ("RUN", 3, State.ERROR, 3, []),
    ],
)
def test_catch_up(comp, comp_run, core, core_run, steps):
    assert catch_up_steps(comp, comp_run, core, core_run) == steps


@settings(max_examples=200, deadline=None)
class RunControlMachine(RuleBasedStateMachine):
    """Random request/completion sequences never reach a state outside the table."""

    def __init__(self):
        super().__init__()
        self.sm = RunStateMachine()
        self.model_run_open = False

    @rule(name=st.sampled_from(sorted(REQUESTS)))
    def request(self, name):
        before = self.sm.state
        allowed = name in allowed_requests(before)
        try:
            after = self.sm.request(name)
        except TransitionRefused as exc:
            assert not allowed
            assert str(before) in str(exc)
            assert self.sm.state is before
        else:
            assert allowed
            assert after not in STABLE_STATES
            if name == "prepare_run":
                self.model_run_open = True

    @precondition(lambda self: self.sm.state not in STABLE_STATES)
    @rule(ok=st.booleans())
    def finish(self, ok):
        before = self.sm.state
        after = self.sm.handle(Completed() if ok else Failed("x"))
        if before in (State.STOPPING, State.RESETTING) and (ok or before is State.RESETTING):
            assert after is State.STOP
            self.model_run_open = False
        elif ok:
            assert after in (State.READY, State.RUN)
        else:
            assert after is State.ERROR

    @rule()
    def fault(self):
        before = self.sm.state
        after = self.sm.handle(Fault("lost"))
        if before is State.STOP:
            assert after is State.STOP
        elif before is not State.RESETTING:
            assert after is State.ERROR

    @invariant()
    def run_open_iff_not_stop(self):
        assert (self.sm.state is not State.STOP) == self.model_run_open

    @invariant()
    def never_stop_to_run(self):
        assert (State.STOP, BeginRun) not in TRANSITIONS


TestRunControlMachine = RunControlMachine.TestCase


def test_every_table_target_reachable_event_types():
    events = {k[1] for k in TRANSITIONS}
    assert events == {PrepareRun, BeginRun, EndRun, type(REQUESTS["reset"]()), Completed,
                      Failed, Fault}
    assert set(COMPONENT_STATE_AFTER) == {"prepare", "begin", "end", "reset"}


def test_transition_targets_agree_with_component_states():
    for transition, target in TRANSITION_TARGET.items():
        assert str(target) == COMPONENT_STATE_AFTER[transition]
        # A component already where the transition leads needs nothing more.
        run = None if target is State.STOP else 3
        assert catch_up_steps(str(target), run, target, run) == []


def test_exit_status_examples():
    clean = dict(went_through_error=False, transition_failures=0, incidents=0,
                 unresolved_incidents=0, storage_reported=True, losses={})
    assert run_exit_status(State.RUN, **clean) == "success"
    assert run_exit_status(State.READY, **clean) == "aborted"
    # Packets lost, no incident: the data is not all there, so not a success.
    assert run_exit_status(State.RUN, **{**clean, "losses": {"st.packets_lost": 4}}) \
        == "degraded"
    assert run_exit_status(State.READY, **{**clean, "losses": {"agg.run_bad_messages": 1}}) \
        == "degraded"
    assert run_exit_status(State.RUN, **{**clean, "storage_reported": False}) == "success"
    resolved = {**clean, "incidents": 1}
    assert run_exit_status(State.RUN, **resolved) == "success"
    assert run_exit_status(State.RUN, **{**resolved, "losses": {"st.packets_lost": 2}}) \
        == "degraded"
    assert run_exit_status(State.RUN, **{**resolved, "storage_reported": False}) == "failed"
    assert run_exit_status(State.RUN, **{**resolved, "unresolved_incidents": 1}) == "failed"
    assert run_exit_status(State.ERROR, **{**clean, "went_through_error": True}) == "failed"


_LOSS_NAMES = [f"{role}.{c}" for role, names in LOSS_COUNTERS.items() for c in names]


@settings(max_examples=300, deadline=None)
@given(
    ended_from=st.sampled_from([State.READY, State.RUN, State.ERROR]),
    error=st.booleans(),
    failures=st.integers(0, 2),
    incidents=st.integers(0, 3),
    data=st.data(),
    reported=st.booleans(),
    losses=st.dictionaries(st.sampled_from(_LOSS_NAMES), st.integers(0, 5), max_size=4),
)
def test_exit_status_properties(ended_from, error, failures, incidents, data, reported, losses):
    unresolved = data.draw(st.integers(0, incidents))
    error = error or ended_from is State.ERROR
    status = run_exit_status(ended_from, went_through_error=error,
                             transition_failures=failures, incidents=incidents,
                             unresolved_incidents=unresolved, storage_reported=reported,
                             losses=losses)
    assert status in EXIT_STATUSES
    lost = sum(losses.values())
    # Each property stands on its own; none restates the function's branches.
    if lost:
        assert status != "success"
    if error or failures or unresolved:
        assert status == "failed"
    if status == "success":
        assert ended_from is State.RUN and not lost and not unresolved and not error
    if status == "degraded":
        assert lost
    if not error and not failures and not incidents and not lost:
        assert status == ("success" if ended_from is State.RUN else "aborted")
    if not error and not failures and not unresolved and reported and lost:
        assert status == "degraded"


def test_run_losses_counts_only_declared_counters_of_the_role():
    counters = {
        "st": {"packets_lost": 3, "packets_written": 100, "frames_duplicate": 9,
               "streams_unfinished": 0, "run_write_errors": 2},
        "agg": {"run_bad_messages": 1, "bad_messages": 7, "frames_resent": 4},
        "p": {"bad_messages": 5, "run_messages_unsent": 6},
        "mon": {"packets_lost": 8},  # a monitor samples; what it misses is not the run's
    }
    roles = {"st": "storage", "agg": "aggregator", "p": "producer", "mon": "monitor"}
    assert run_losses(counters, roles) == {
        "st.packets_lost": 3, "st.run_write_errors": 2, "agg.run_bad_messages": 1,
        "p.run_messages_unsent": 6}
    # A counter that cannot be read cannot vouch for anything.
    assert run_losses({"st": {"packets_lost": "?"}}, {"st": "storage"}) == {
        "st.packets_lost": 1}
    assert run_losses({}, {}) == {}


def test_every_loss_counter_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "datapath.md").read_text()
    for names in LOSS_COUNTERS.values():
        for name in names:
            assert f"`{name.removeprefix('run_')}`" in doc, name


def test_component_hooks_examples():
    assert component_hooks("STOP", "prepare") == ("prepare",)
    assert component_hooks(State.RUN, "prepare") == ("end", "prepare")
    assert component_hooks("READY", "prepare") == ("end", "prepare")
    assert component_hooks("READY", "begin") == ("begin",)
    assert component_hooks("RUN", "begin") == ()
    assert component_hooks("STOP", "end") == () == component_hooks("STOP", "reset")
    assert component_hooks("RUN", "reset") == ("reset",)
    with pytest.raises(ValueError, match=r"^cannot begin in state STOP; prepare first$"):
        component_hooks("STOP", "begin")
    with pytest.raises(ValueError, match="unknown transition 'pause'"):
        component_hooks("READY", "pause")
    assert {s for s, _ in COMPONENT_HOOKS} == {State.STOP, State.READY, State.RUN}


_WHERE_IT_LEADS = {"prepare": "READY", "begin": "RUN", "end": "STOP", "reset": "STOP"}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(sorted(_WHERE_IT_LEADS)), max_size=15))
def test_a_component_following_the_table_ends_where_each_transition_leads(transitions):
    state, prepared = State.STOP, 0
    for transition in transitions:
        try:
            hooks = component_hooks(state, transition)
        except ValueError:
            # The only refusal: data cannot start before the component was prepared.
            assert (transition, state) == ("begin", State.STOP)
            continue
        for hook in hooks:
            state = COMPONENT_STATE_AFTER[hook]
        assert state == _WHERE_IT_LEADS[transition]
        # Every hook runs at most once, and a run's own hook is the last one run.
        assert len(set(hooks)) == len(hooks) and (not hooks or hooks[-1] == transition)
        prepared += hooks.count("prepare")
    assert prepared <= transitions.count("prepare")

