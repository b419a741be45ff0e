"""The component base against a real core process: actions, hooks, errors, threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from larpixdaq import Operator
from larpixdaq.runcontrol.actions import action
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.operator import Ack, Progress, Result
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


class Board(Component):
    role = "producer"

    def __init__(self, name, core, **kw):
        super().__init__(name, core, heartbeat_interval=0.05, core_timeout=0.5, **kw)
        self.errors: list[str] = []
        self.loops = 0
        self.fail_prepare = False
        self.sleeping = threading.Event()

    def counters(self):
        return {"loops": self.loops, "loops_numpy": np.int64(self.loops)}

    def main(self, stop):
        while not stop.wait(0.01):
            self.loops += 1

    def on_prepare(self, run):
        if self.fail_prepare:
            raise RuntimeError("no board connected")

    def on_error(self, reason):
        self.errors.append(reason)

    @action
    def scan(self, steps: int, label: str = "x"):
        """Step through a scan."""
        for i in range(steps):
            yield {"step": i}
        return {"steps": steps, "label": label}

    @action(name="sleep")
    def long_action(self, seconds: float = 1.0):
        """Stands for a long calibration."""
        self.sleeping.set()
        time.sleep(seconds)
        return "slept"

    @action
    def histogram(self, bins: int = 3):
        """Numpy results travel as plain lists."""
        return {"counts": np.arange(bins, dtype=np.uint32), "total": np.float32(1.5)}

    @action
    def broken(self):
        raise RuntimeError("the board is on fire")


@pytest.fixture
def board(core):
    b = Board("board", core.endpoint).start()
    assert b.wait_registered(5)
    yield b
    b.stop()


def test_actions_are_registered_with_parameters_and_docs(core, board):
    board.register_action("hello", lambda name="world": f"hello {name}", doc="Greets.")
    assert set(board.actions) == {"scan", "sleep", "histogram", "broken", "hello"}
    with Operator(core.endpoint) as op:
        acts = op.call("actions").data["actions"]["board"]
    assert acts["scan"]["doc"] == "Step through a scan."
    assert acts["scan"]["params"] == [
        {"name": "steps", "required": True, "annotation": "int"},
        {"name": "label", "required": False, "annotation": "str", "default": "x"},
    ]
    assert "sleep" in acts and "hello" not in acts  # registered after start: not advertised


def test_generator_action_reports_progress_then_result(core, board):
    with Operator(core.endpoint) as op:
        responses = list(op.invoke("board", "scan", steps=3, label="q"))
    assert isinstance(responses[0], Ack)
    assert [r.data for r in responses if isinstance(r, Progress)] == [
        {"step": 0}, {"step": 1}, {"step": 2}]
    final = responses[-1]
    assert isinstance(final, Result) and final.success
    assert final.data == {"result": {"steps": 3, "label": "q"}}


def test_bad_invocations_fail_clearly(core, board):
    with Operator(core.endpoint) as op:
        r = op.call("invoke", {"component": "board", "action": "fly"})
        assert not r.success and "has no action 'fly'" in r.message and "scan" in r.message
        r = op.call("invoke", {"component": "nobody", "action": "scan"})
        assert not r.success and "no component named 'nobody'" in r.message
        r = op.wait(op.invoke("board", "scan", stepz=2))
        assert not r.success and "bad parameters for scan" in r.message
        r = op.wait(op.invoke("board", "broken"))
        assert not r.success and "the board is on fire" in r.message
    assert board.control_counters["actions_failed"] == 1


def test_long_action_stalls_neither_heartbeats_nor_transitions_nor_main(core, board):
    with Operator(core.endpoint) as op:
        running = op.invoke("board", "sleep", seconds=1.5, timeout=10)
        assert isinstance(next(running), Ack)
        loops = board.loops
        # The action outlives the core's heartbeat time-out (0.4 s) several times over.
        prepared = op.wait(op.prepare_run())
        assert prepared.success, prepared.message
        final = op.wait(running)
        assert final.success and final.data["result"] == "slept"
        status = op.call("status").data
        assert [c["name"] for c in status["components"]] == ["board"]
        assert not [e for e in op.poll_events() if e.kind == "lost"]
        assert board.loops > loops
        assert op.wait(op.end_run()).success


def test_failing_hook_refuses_transition_and_on_error_runs(core, board):
    board.fail_prepare = True
    with Operator(core.endpoint) as op:
        r = op.wait(op.prepare_run())
        assert not r.success
        assert "producer board refused prepare: RuntimeError: no board connected" in r.message
        wait_for(lambda: board.errors)
        assert board.state == "STOP"
        board.fail_prepare = False
        assert op.wait(op.reset()).success
        assert op.wait(op.prepare_run()).success
        assert board.state == "READY"
        assert op.wait(op.end_run()).success


def test_malformed_message_from_core_is_counted(board):
    board._on_payload(None, b"\x00junk")
    assert board.control_counters["malformed_messages"] == 1


def test_rejected_messages_and_failed_actions_reach_the_run_record(core, board):
    board._on_payload(None, b"\x00junk")
    with Operator(core.endpoint) as op:
        assert not op.wait(op.invoke("board", "broken")).success
        live = wait_for(lambda: (op.call("status").data["components"][0]["counters"]
                                 .get("malformed_messages")))
        assert live == 1
        assert op.wait(op.prepare_run()).success
        end = op.wait(op.end_run())
        assert end.success
        counters = end.data["run"]["counters"]["board"]
        assert counters["malformed_messages"] == 1 and counters["actions_failed"] == 1
        assert "loops" in counters


def test_own_counters_come_first_and_win_over_the_base_ones():
    class Shadowing(Board):
        def counters(self):
            return {"loops": 7, "reconnects": 99}  # a name the base also counts

    b = Shadowing("shadow", "tcp://127.0.0.1:9")
    try:
        counters = b._safe_counters()
        assert list(counters)[:2] == ["loops", "reconnects"]
        assert counters["reconnects"] == 99
        assert "malformed_messages" in counters and "actions_failed" in counters
    finally:
        b.stop()


def test_message_the_core_cannot_take_is_counted():
    import zmq

    from larpixdaq.runcontrol import messages as m

    b = Board("lonely", "tcp://127.0.0.1:9")
    sock = zmq.Context.instance().socket(zmq.DEALER)  # connected to nothing: Again
    try:
        b._send(sock, m.Bye(name="lonely"))
        assert b._safe_counters()["control_messages_unsent"] == 1
    finally:
        sock.close(0)
        b.stop()


def test_a_failing_counters_is_counted_and_heartbeats_go_on():
    class Broken(Board):
        def counters(self):
            raise RuntimeError("sensor gone")

    b = Broken("broken", "tcp://127.0.0.1:9")
    try:
        assert b._safe_counters()["counters_failed"] == 1
        assert b._safe_counters()["counters_failed"] == 2
    finally:
        b.stop()


def test_component_waits_for_a_core_that_starts_later(tmp_path):
    probe = CoreProcess(tmp_path / "probe.sqlite").start()
    endpoint = probe.endpoint  # a free port: the core is stopped, the component starts first
    probe.terminate()
    b = Board("early", endpoint).start()
    try:
        assert not b.wait_registered(0.3)
        with CoreProcess(tmp_path / "runs.sqlite", endpoint=endpoint):
            assert b.wait_registered(5)
    finally:
        b.stop()


def test_stop_ends_threads(core):
    b = Board("b2", core.endpoint).start()
    assert b.wait_registered(5)
    b.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("b2-")]
    with Operator(core.endpoint) as op:
        wait_for(lambda: not op.call("clients").data["components"])


def test_numpy_counters_and_results_travel(core, board):
    with Operator(core.endpoint) as op:
        r = op.wait(op.invoke("board", "histogram", bins=4))
        assert r.success and r.data["result"] == {"counts": [0, 1, 2, 3], "total": 1.5}
        assert op.wait(op.prepare_run()).success
        end = op.wait(op.end_run())
        assert end.success
        counters = end.data["run"]["counters"]["board"]
        assert counters["loops_numpy"] == counters["loops"]
        live = wait_for(lambda: op.call("status").data["components"][0]["counters"])
        assert isinstance(live["loops_numpy"], int)


def test_components_find_each_other_through_the_core(core, board):
    assert board.wait_service("aggregator.out", timeout=0.1) is None
    agg = Component("agg", core.endpoint, role="aggregator", heartbeat_interval=0.05,
                    endpoints={"aggregator.out": "tcp://10.0.0.5:6000"}).start()
    try:
        assert board.wait_service("aggregator.out") == "tcp://10.0.0.5:6000"
    finally:
        agg.stop()


def test_stop_while_an_action_runs_and_stop_twice(core):
    b = Board("b3", core.endpoint).start()
    assert b.wait_registered(5)
    with Operator(core.endpoint) as op:
        running = op.invoke("b3", "sleep", seconds=0.3)
        assert isinstance(next(running), Ack)
        # The Ack says the action was accepted, not that it started: a stop before the
        # worker picks it up cancels it instead. Stop only once it really runs.
        assert b.sleeping.wait(5)
    b.stop()
    # The action finishes after the component stopped; its reply goes nowhere.
    wait_for(lambda: b.control_counters["actions_run"] == 1 and b._outbox.qsize() > 0)
    b.stop()
    assert b._closed and b.control_counters["actions_run"] == 1


class HoldingBoard(Board):
    """A long action that holds the action worker until released by an immediate action."""

    def __init__(self, name, core, **kw):
        super().__init__(name, core, **kw)
        self.release_flag = threading.Event()

    @action
    def hold(self, limit: float = 20.0):
        """Stands for a long routine: waits until released (or ``limit`` s)."""
        released = self.release_flag.wait(limit)
        return "released" if released else "gave up"

    @action(immediate=True)
    def release(self):
        """Let go of the held action; answers at once."""
        was_holding = not self.release_flag.is_set()
        self.release_flag.set()
        return {"was_holding": was_holding}


def test_an_immediate_action_answers_while_a_long_action_runs(core):
    b = HoldingBoard("holder", core.endpoint).start()
    assert b.wait_registered(5)
    try:
        with Operator(core.endpoint) as op, Operator(core.endpoint) as other:
            acts = op.call("actions").data["actions"]["holder"]
            assert acts["release"]["immediate"] is True
            assert "immediate" not in acts["hold"]
            held = op.invoke("holder", "hold", timeout=30)
            assert isinstance(next(held), Ack)
            queued = op.invoke("holder", "histogram", bins=2, timeout=30)
            # The held action occupies the action worker; release jumps the queue.
            released = other.wait(other.invoke("holder", "release"))
            assert released.success, released.message
            assert released.data["result"] == {"was_holding": True}
            final = op.wait(held)
            assert final.success and final.data["result"] == "released"
            after = op.wait(queued)  # the ordinary action waited its turn, then ran
            assert after.success and after.data["result"]["counts"] == [0, 1]
        assert b.control_counters["actions_run"] == 3
    finally:
        b.stop()


def test_register_action_can_declare_an_immediate_action(core):
    b = Board("b4", core.endpoint)
    b.register_action("status_now", lambda: "fine", doc="Answers at once.", immediate=True)
    assert b.actions["status_now"].immediate and not b.actions["scan"].immediate
    assert b.actions["status_now"].describe()["immediate"] is True
    b.stop()


def test_hooks_follow_the_component_table_without_a_core():
    from larpixdaq.runcontrol.messages import RunInfo

    class Recorder(Component):
        def __init__(self):
            super().__init__("recorder", "tcp://127.0.0.1:9", forward_logs=False)
            self.calls = []

        def on_prepare(self, run):
            self.calls.append(f"prepare {run.run_number}")

        def on_begin(self, run):
            self.calls.append(f"begin {run.run_number}")

        def on_end(self, run):
            self.calls.append(f"end {run.run_number}")
            return {"files": ["run.h5"]}

    comp = Recorder()
    try:
        with pytest.raises(ValueError, match="cannot begin in state STOP; prepare first"):
            comp._apply("begin", None)
        stopped = comp._apply("end", None)
        assert stopped["files"] == [] and "actions_run" in stopped["counters"]
        comp._apply("prepare", RunInfo(run_number=1))
        comp._apply("begin", None)
        assert comp._apply("begin", None) == {}  # already running: nothing is called
        assert comp.state == "RUN" and comp.run.run_number == 1
        # A new run while in one: the old run ends first, then the new one is prepared.
        comp._apply("prepare", RunInfo(run_number=2))
        assert comp.state == "READY" and comp.run.run_number == 2
        ended = comp._apply("end", None)
        assert ended["files"] == ["run.h5"] and comp.state == "STOP" and comp.run is None
        assert comp.calls == ["prepare 1", "begin 1", "end 1", "prepare 2", "end 2"]
    finally:
        comp.stop()

