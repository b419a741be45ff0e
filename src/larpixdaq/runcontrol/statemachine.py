"""The run-control state machine: everything that affects the run state lives in this file.

It is pure: no sockets, threads, files or clocks. The core feeds it events (an operator asked
for a transition, every component acknowledged, a component failed or was lost) and it says
which state follows, or refuses with an error that names the state and what is allowed there.
Transitions are one table (:data:`TRANSITIONS`), not a scatter of ``if`` statements, so the
table in ``docs/runcontrol.md`` and this code cannot drift apart silently.

Stable states are STOP, READY, RUN and ERROR. While the core waits for the components to
acknowledge a transition the state is a transitional one (PREPARING, STARTING, STOPPING,
RESETTING), so a second request arriving meanwhile is refused rather than interleaved.

More pure pieces live here because they decide how a transition is carried out and how a run
ends: the order in which components are told (:func:`transition_groups`), what a component
does with a transition in each of its own states (:data:`COMPONENT_HOOKS`, which the component
base follows), the steps that bring a component that joins late (or registers again after it
was lost) to a state (:func:`catch_up_steps`), and the exit status of a run
(:func:`run_exit_status`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from larpixdaq.errors import LarpixDaqError


class State(str, Enum):
    """The state of the DAQ as held by the core."""

    STOP = "STOP"
    PREPARING = "PREPARING"
    READY = "READY"
    STARTING = "STARTING"
    RUN = "RUN"
    STOPPING = "STOPPING"
    ERROR = "ERROR"
    RESETTING = "RESETTING"

    def __str__(self) -> str:
        return self.value


STABLE_STATES = frozenset({State.STOP, State.READY, State.RUN, State.ERROR})
#: States in which a run is open (a run number has been handed out and not yet closed).
RUN_OPEN_STATES = frozenset(State) - {State.STOP}


# --- events: small immutable values --------------------------------------------------------


@dataclass(frozen=True)
class PrepareRun:
    """The operator asks to prepare a run (components get ready to receive data)."""


@dataclass(frozen=True)
class BeginRun:
    """The operator asks to start data taking."""


@dataclass(frozen=True)
class EndRun:
    """The operator asks to end the run (from READY, RUN, or ERROR to close a failed run)."""


@dataclass(frozen=True)
class Reset:
    """The operator asks to leave ERROR for STOP, closing any open run as failed/aborted."""


@dataclass(frozen=True)
class Completed:
    """Every participating component acknowledged the transition in progress."""


@dataclass(frozen=True)
class Failed:
    """A component refused or did not answer the transition in progress."""

    reason: str = ""


@dataclass(frozen=True)
class Fault:
    """Something went wrong outside a transition (a component lost during a run)."""

    reason: str = ""


Event = PrepareRun | BeginRun | EndRun | Reset | Completed | Failed | Fault

#: Operator requests, by the name the operator uses for them.
REQUESTS: dict[str, type] = {
    "prepare_run": PrepareRun,
    "begin_run": BeginRun,
    "end_run": EndRun,
    "reset": Reset,
}
_REQUEST_NAMES = {v: k for k, v in REQUESTS.items()}

S = State
#: (state, event type) -> next state. Anything not listed is refused.
TRANSITIONS: dict[tuple[State, type], State] = {
    (S.STOP, PrepareRun): S.PREPARING,
    (S.PREPARING, Completed): S.READY,
    (S.PREPARING, Failed): S.ERROR,
    (S.READY, BeginRun): S.STARTING,
    (S.STARTING, Completed): S.RUN,
    (S.STARTING, Failed): S.ERROR,
    (S.READY, EndRun): S.STOPPING,
    (S.RUN, EndRun): S.STOPPING,
    (S.ERROR, EndRun): S.STOPPING,
    (S.STOPPING, Completed): S.STOP,
    (S.STOPPING, Failed): S.ERROR,
    (S.ERROR, Reset): S.RESETTING,
    (S.RESETTING, Completed): S.STOP,
    # A reset always ends in STOP: it is the way out, so it must not be able to fail.
    (S.RESETTING, Failed): S.STOP,
    # Faults: during a run they put the DAQ in ERROR; with no run open they change nothing.
    (S.STOP, Fault): S.STOP,
    (S.PREPARING, Fault): S.ERROR,
    (S.READY, Fault): S.ERROR,
    (S.STARTING, Fault): S.ERROR,
    (S.RUN, Fault): S.ERROR,
    (S.STOPPING, Fault): S.ERROR,
    (S.ERROR, Fault): S.ERROR,
    (S.RESETTING, Fault): S.RESETTING,
}

#: The component-level transition each transitional core state carries out.
COMPONENT_TRANSITION: dict[State, str] = {
    S.PREPARING: "prepare",
    S.STARTING: "begin",
    S.STOPPING: "end",
    S.RESETTING: "reset",
}


class TransitionRefused(LarpixDaqError):
    """An operator request that is not allowed in the current state."""

    def __init__(self, state: State, request: str, allowed: Iterable[str]) -> None:
        self.state = state
        self.request = request
        self.allowed = sorted(allowed)
        allowed_text = ", ".join(self.allowed) if self.allowed else "none (wait for it to finish)"
        super().__init__(f"cannot {request} in state {state}; allowed in {state}: {allowed_text}")


class InvalidEvent(LarpixDaqError):
    """An internal event that the current state cannot take (a bug in the caller)."""


def allowed_requests(state: State) -> list[str]:
    """The operator requests accepted in ``state``, by name."""
    return sorted(
        name for name, ev in REQUESTS.items() if (State(state), ev) in TRANSITIONS
    )


class RunStateMachine:
    """The run state plus the table; the only place the state changes."""

    def __init__(self, state: State = State.STOP) -> None:
        self.state = State(state)

    @property
    def allowed(self) -> list[str]:
        return allowed_requests(self.state)

    def request(self, name: str) -> State:
        """Apply an operator request by name; refuse it clearly if not allowed now."""
        event_type = REQUESTS.get(name)
        if event_type is None:
            raise TransitionRefused(self.state, name, self.allowed)
        return self.handle(event_type())

    def handle(self, event: Event) -> State:
        """Apply ``event`` and return the new state."""
        key = (self.state, type(event))
        if key not in TRANSITIONS:
            name = _REQUEST_NAMES.get(type(event))
            if name is not None:
                raise TransitionRefused(self.state, name, self.allowed)
            raise InvalidEvent(f"event {type(event).__name__} is not valid in state {self.state}")
        self.state = TRANSITIONS[key]
        return self.state


# --- how a transition is carried out -------------------------------------------------------

#: Roles told in each group, in order. Storage is ready before data flows and closes only after
#: the producers have stopped. Roles not named here (log collectors, anything else) go last.
ROLE_ORDER: dict[str, list[tuple[str, ...]]] = {
    "prepare": [("storage",), ("aggregator", "monitor"), ("producer",)],
    "begin": [("storage",), ("aggregator",), ("monitor",), ("producer",)],
    "end": [("producer",), ("aggregator",), ("monitor",), ("storage",)],
    "reset": [("producer",), ("aggregator",), ("monitor",), ("storage",)],
}


def transition_groups(transition: str, roles: Mapping[str, str]) -> list[list[str]]:
    """Component names grouped in the order they are told ``transition``.

    Components in one group are told together; the next group is told only when every member
    of the previous one has acknowledged. Empty groups are dropped.
    """
    if transition not in ROLE_ORDER:
        raise ValueError(f"unknown transition {transition!r}; known: {', '.join(ROLE_ORDER)}")
    named = {role for group in ROLE_ORDER[transition] for role in group}
    groups = [
        sorted(n for n, r in roles.items() if r in group) for group in ROLE_ORDER[transition]
    ]
    groups.append(sorted(n for n, r in roles.items() if r not in named))
    return [g for g in groups if g]


# --- a component's own state ------------------------------------------------------------

#: The component-level state each component transition (and each hook of the same name) leads
#: to. A component is only ever in STOP, READY or RUN.
COMPONENT_STATE_AFTER: dict[str, State] = {
    "prepare": State.READY, "begin": State.RUN, "end": State.STOP, "reset": State.STOP,
}
COMPONENT_STATES = frozenset(COMPONENT_STATE_AFTER.values())

#: What a component in a state does when told a transition: the hooks it runs, in order (each
#: leaves it in ``COMPONENT_STATE_AFTER[hook]``). An empty tuple means there is nothing to do
#: (it is already there); a pair that is missing is refused. The component base
#: (:mod:`larpixdaq.runcontrol.component`) follows this table and decides nothing itself.
COMPONENT_HOOKS: dict[tuple[State, str], tuple[str, ...]] = {
    (S.STOP, "prepare"): ("prepare",),
    # Prepared or running for another run: that run ends first (the core's catch-up does this
    # for a component it finds in a stale run).
    (S.READY, "prepare"): ("end", "prepare"),
    (S.RUN, "prepare"): ("end", "prepare"),
    (S.READY, "begin"): ("begin",),
    (S.RUN, "begin"): (),
    (S.STOP, "end"): (),
    (S.READY, "end"): ("end",),
    (S.RUN, "end"): ("end",),
    (S.STOP, "reset"): (),
    (S.READY, "reset"): ("reset",),
    (S.RUN, "reset"): ("reset",),
}


def component_hooks(state: str, transition: str) -> tuple[str, ...]:
    """The hooks a component in ``state`` runs for ``transition`` (see :data:`COMPONENT_HOOKS`).

    Raises ``ValueError`` for an unknown transition, and for one not allowed in ``state``
    naming the transition that would make it allowed (``cannot begin in state STOP; prepare
    first``).
    """
    if transition not in COMPONENT_STATE_AFTER:
        raise ValueError(f"unknown transition {transition!r}")
    state = State(state)
    hooks = COMPONENT_HOOKS.get((state, transition))
    if hooks is None:
        first = sorted(t for (st, t) in COMPONENT_HOOKS if st is state
                       and (COMPONENT_STATE_AFTER[t], transition) in COMPONENT_HOOKS)
        hint = f"; {' or '.join(first)} first" if first else ""
        raise ValueError(f"cannot {transition} in state {state}{hint}")
    return hooks

#: The stable core state a component transition brings the DAQ to. A component that registers
#: again while its group is being told is brought there with :func:`catch_up_steps`.
TRANSITION_TARGET: dict[str, State] = {
    "prepare": State.READY, "begin": State.RUN, "end": State.STOP, "reset": State.STOP,
}


#: Every counter that means data of the run was lost or refused, by the role that reports it
#: at the end of the run (all are counts for that run alone). The exit-status rule reads these
#: and only these; ``docs/datapath.md`` says what each one counts.
LOSS_COUNTERS: dict[str, tuple[str, ...]] = {
    "storage": (
        "packets_lost",            # packets in holes of a stream's seq (from the offsets)
        "frames_missing",          # frames in those holes
        "streams_unfinished",      # streams whose "Ending run" never arrived
        "decode_errors",           # data words refused by the decoder
        "run_bad_frames",          # frames refused as malformed
        "run_write_errors",        # the file could not be written
        "run_frames_refused",      # not written after a write error (never acknowledged)
        "run_frames_outside_run",  # frames of no open run (written nowhere)
        "run_frames_not_admitted", # frames of streams not admitted to the run
        "frames_conflicting",      # other bytes under a seq already written
    ),
    "aggregator": (
        "run_bad_messages",        # producer/storage messages refused as malformed
        "run_frames_not_admitted",  # frames of streams not admitted to the run (or of a
                                    # stream another connection sends)
        "run_frames_oversize",     # messages over the protocol's size limits
    ),
    "producer": ("run_messages_unsent",      # read from the board but never sent
                 "run_data_gaps"),           # holes left by a dead producer (see gapmark)
}

#: Every exit status a run can end with, best first.
EXIT_STATUSES = ("success", "degraded", "aborted", "failed")


def run_losses(counters: Mapping[str, Mapping[str, object]],
               roles: Mapping[str, str]) -> dict[str, int]:
    """The run's nonzero loss counters as ``{"component.counter": n}``.

    ``counters`` is what each component reported at the end of the run (by component name)
    and ``roles`` its role; only the counters :data:`LOSS_COUNTERS` declares for that role
    count. A value that is not a number counts as one loss: a counter nobody can read cannot
    vouch that nothing was lost.
    """
    out: dict[str, int] = {}
    for name, values in counters.items():
        for counter in LOSS_COUNTERS.get(roles.get(name, ""), ()):
            if counter not in values:
                continue
            value = values[counter]
            n = int(value) if isinstance(value, (int, float)) and not isinstance(
                value, bool) else 1
            if n:
                out[f"{name}.{counter}"] = n
    return out


def run_exit_status(
    ended_from: State,
    *,
    went_through_error: bool,
    transition_failures: int,
    incidents: int,
    unresolved_incidents: int,
    storage_reported: bool,
    losses: Mapping[str, int],
) -> str:
    """How a run that is being closed ended: ``success``, ``degraded``, ``aborted``, ``failed``.

    * ``failed``: the DAQ did not carry the run through: it went through ERROR, its closing
      transition had failures, it has an incident that was not put right, or it had
      incidents (put right) and no storage reported, so nothing shows that nothing was lost;
    * ``degraded``: carried through, but data was lost or refused: any of ``losses`` (the
      run's :func:`run_losses`) is nonzero;
    * ``aborted``: ended before data taking began, nothing lost;
    * ``success``: ended from RUN, nothing unresolved and every loss counter zero.
    """
    if went_through_error or transition_failures or unresolved_incidents:
        return "failed"
    if incidents and not storage_reported:
        return "failed"
    if any(losses.values()):
        return "degraded"
    return "success" if State(ended_from) is State.RUN else "aborted"


def catch_up_steps(
    component_state: str,
    component_run: int | None,
    core_state: State,
    core_run: int | None,
) -> list[str]:
    """The transitions that bring a component to the core's stable state and run.

    A component in another run than the core's is first ended; then it is prepared and begun
    as far as the core is. Only meaningful in STOP, READY and RUN (in other states the core
    leaves components alone); returns ``[]`` there.
    """
    core_state = State(core_state)
    target = {State.STOP: 0, State.READY: 1, State.RUN: 2}.get(core_state)
    if target is None:
        return []
    level = {State.STOP: 0, State.READY: 1, State.RUN: 2}.get(component_state, 0)
    steps: list[str] = []
    if level > 0 and (target == 0 or component_run != core_run):
        steps.append("end")
        level = 0
    if level == 2 and target == 1:
        # A component cannot go back from RUN to READY within a run: end it and prepare again.
        steps.append("end")
        level = 0
    if level < 1 <= target:
        steps.append("prepare")
        level = 1
    if level < 2 <= target:
        steps.append("begin")
    return steps
