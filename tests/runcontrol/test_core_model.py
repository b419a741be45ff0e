"""Model-based test: random operator requests and component arrivals/departures against a
real core (in a thread, real sockets), checked against the pure state machine as the model.

The core runs with ``rejoin_grace=0`` so that a departure during a run is the table's Fault at
once; holding a run for a component to come back is tested with real processes elsewhere."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from larpixdaq import Operator
from larpixdaq.runcontrol.access import ensure_local_admin
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.core import Core
from larpixdaq.runcontrol.statemachine import (
    Completed,
    Fault,
    RunStateMachine,
    State,
    allowed_requests,
)
from larpixdaq.runcontrol.testing import wait_for

ROLES = ["storage", "aggregator", "monitor", "producer"]


@settings(max_examples=15, stateful_step_count=12, deadline=None)
class CoreModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.core = Core("tcp://127.0.0.1:0", Path(self.tmp.name) / "runs.sqlite",
                         heartbeat_interval=0.05, heartbeat_timeout=2.0, ack_timeout=2.0,
                         rejoin_grace=0, forward_logs=False)
        endpoint = self.core.bind()
        # The operator acts as the local expert, as the command line would.
        ensure_local_admin(Path(self.tmp.name) / "runs.sqlite", endpoint)
        self.thread = threading.Thread(target=self.core.serve_forever, daemon=True)
        self.thread.start()
        self.op = Operator(endpoint, timeout=10)
        self.endpoint = endpoint
        self.model = RunStateMachine()
        self.components: dict[str, Component] = {}
        self.numbers: list[int] = []
        self.serial = 0

    def teardown(self):
        for c in self.components.values():
            c.stop()
        self.op.close()
        self.core.stop()
        self.thread.join(5)
        self.core.close()
        self.tmp.cleanup()

    @rule(request=st.sampled_from(["prepare_run", "begin_run", "end_run", "reset"]))
    def request(self, request):
        allowed = request in allowed_requests(self.model.state)
        final = self.op.call(request)
        assert final.success == allowed, (request, self.model.state, final.message)
        if allowed:
            self.model.request(request)
            self.model.handle(Completed())
            if request == "prepare_run":
                self.numbers.append(final.data["run_number"])
            if self.model.state is State.STOP:
                assert final.data["run"]["exit_status"] in ("success", "aborted", "failed")
                assert final.data["run"]["run_number"] == self.numbers[-1]
        else:
            assert "cannot" in final.message

    @precondition(lambda self: len(self.components) < 4)
    @rule(role=st.sampled_from(ROLES))
    def add_component(self, role):
        self.serial += 1
        c = Component(f"c{self.serial}", self.endpoint, role=role, heartbeat_interval=0.05,
                      forward_logs=False).start()
        assert c.wait_registered(5)
        self.components[c.name] = c
        if self.model.state in (State.READY, State.RUN):
            wait_for(lambda: c.state == str(self.model.state))

    @precondition(lambda self: self.components)
    @rule(data=st.data())
    def remove_component(self, data):
        name = data.draw(st.sampled_from(sorted(self.components)))
        c = self.components.pop(name)
        was_in_run = c.state != "STOP"
        c.stop()
        wait_for(lambda: name not in [x["name"] for x in
                                      self.op.call("clients").data["components"]])
        if was_in_run and self.model.state in (State.READY, State.RUN):
            self.model.handle(Fault(f"{name} left"))

    @invariant()
    def core_agrees_with_model(self):
        status = self.op.call("status").data
        assert status["state"] == str(self.model.state)
        for c in self.components.values():
            expected = {State.READY: "READY", State.RUN: "RUN"}.get(self.model.state)
            if expected:
                assert c.state == expected

    @invariant()
    def run_numbers_strictly_increase(self):
        assert self.numbers == sorted(set(self.numbers))


TestCoreModel = CoreModel.TestCase

