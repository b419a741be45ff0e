"""A component lost during a run: held for the rejoin grace, replaced by a restarted process,
or, when none comes back, ERROR naming it. Real core and component processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from larpixdaq import Operator
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.operator import Ack, Progress, Result
from larpixdaq.runcontrol.rundb import RunDatabase
from larpixdaq.runcontrol.testing import wait_for


class Events:
    """Everything the operator was told, in order, kept across polls."""

    def __init__(self, op: Operator) -> None:
        self.op = op
        self.seen: list = []

    def wait(self, kind: str, text: str = "", timeout: float = 30.0):
        def found():
            self.seen.extend(self.op.poll_events(0.05))
            return [e for e in self.seen if e.kind == kind and text in e.message]

        return wait_for(found, timeout)[0]


def _naming(incidents: list[str], name: str) -> int:
    """The index of the first incident about component ``name`` (its loss). Others may
    exist: on a loaded machine a late heartbeat makes its own incident, not the point here."""
    return next(i for i, text in enumerate(incidents) if f"component {name} (" in text)


def _status(op):
    return op.call("status").data


def _runs_json(endpoint):
    out = subprocess.run([sys.executable, "-m", "larpixdaq.cli", "runs", "--json",
                          "--core", endpoint], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_storage_killed_and_restarted_within_grace_run_succeeds(make_core, recorders,
                                                                 spawn_component):
    core = make_core("--rejoin-grace", "20")
    p = recorders("p", "producer", core.endpoint)
    storage = spawn_component("st", core.endpoint, role="storage")
    with Operator(core.endpoint) as op:
        events = Events(op)
        number = op.wait(op.prepare_run(comment="restart")).data["run_number"]
        assert op.wait(op.begin_run()).success
        storage.send_signal(signal.SIGKILL)
        lost = events.wait("lost", "st")
        assert "component st (storage) lost" in lost.message
        assert f"run {number} is held up to 20 s" in lost.message
        held = _status(op)
        assert held["state"] == "RUN"
        assert [x["name"] for x in held["missing"]] == ["st"]
        assert "st (storage) lost" in held["incidents"][_naming(held["incidents"], "st")]

        spawn_component("st", core.endpoint, role="storage")  # same name and role, new pid
        rejoined = events.wait("rejoined", "st")
        assert f"rejoined run {number} after" in rejoined.message
        events.wait("caught-up", "st")  # a fresh process: prepared and begun into the run
        st = _status(op)
        assert st["state"] == "RUN" and st["missing"] == []
        assert {c["name"]: c["state"] for c in st["components"]} == {"p": "RUN", "st": "RUN"}
        incident = st["incidents"][_naming(st["incidents"], "st")]
        assert "resolved" in incident and "registered again after" in incident
        assert st["counters"]["components_rejoined"] == 1
        end = op.wait(op.end_run())
        assert end.success, end.message
        run = end.data["run"]
        assert run["exit_status"] == "success"
        assert _naming(run["incidents"], "st") in run["resolved_incidents"]
        assert run["packets_lost"] == 0 and run["counters"]["st"]["packets_lost"] == 0
        assert p.state == "STOP"
    listed = _runs_json(core.endpoint)[0]
    assert listed["run_number"] == number and listed["exit_status"] == "success"
    index = _naming(listed["incidents"], "st")
    assert "st (storage) lost" in listed["incidents"][index]
    assert index in listed["resolved_incidents"]


def test_not_restarted_the_run_goes_on_and_its_end_fails_naming_it(make_core, recorders,
                                                                    spawn_component):
    # A stall is not a death: past the grace the run goes on (told once, `overdue`); the
    # end waits for the missing component one more grace, then fails naming it.
    core = make_core("--rejoin-grace", "2")
    recorders("st", "storage", core.endpoint, lost=0)
    board = spawn_component("board", core.endpoint)
    with Operator(core.endpoint) as op:
        events = Events(op)
        number = op.wait(op.prepare_run()).data["run_number"]
        assert op.wait(op.begin_run()).success
        board.send_signal(signal.SIGKILL)
        assert "held up to 2 s" in events.wait("lost", "board").message
        overdue = events.wait("overdue", "board")
        assert "component board (producer) lost and did not register again within 2 s" in \
            overdue.message and "goes on" in overdue.message
        st = _status(op)
        assert st["state"] == "RUN" and [m["name"] for m in st["missing"]] == ["board"]
        end = op.wait(op.end_run())
        assert not end.success
        assert "component board (producer) lost and did not register again within 2 s" in \
            end.message
        assert _status(op)["state"] == "ERROR"
        end = op.wait(op.end_run())
        assert end.success
        assert end.data["run"]["exit_status"] == "failed"
        assert end.data["run"]["run_number"] == number
        about_board = [i for i in end.data["run"]["incidents"] if "board" in i]
        assert about_board and all("resolved" not in i for i in about_board)
        assert _status(op)["state"] == "STOP"


def test_zero_grace_is_error_at_once(make_core, recorders, spawn_component):
    core = make_core("--rejoin-grace", "0")
    recorders("st", "storage", core.endpoint, lost=0)
    board = spawn_component("board", core.endpoint)
    with Operator(core.endpoint) as op:
        events = Events(op)
        op.wait(op.prepare_run())
        assert op.wait(op.begin_run()).success
        board.send_signal(signal.SIGKILL)
        lost = events.wait("lost", "board")
        assert "held" not in lost.message
        st = _status(op)  # the loss and the fault are one step of the core
        assert st["state"] == "ERROR"
        assert "board" not in [c["name"] for c in st["components"]]
        assert any("board" in i for i in st["incidents"])
        assert op.wait(op.end_run()).data["run"]["exit_status"] == "failed"


def test_replacement_while_the_old_one_seems_alive(make_core, recorders):
    core = make_core("--rejoin-grace", "20")
    recorders("st", "storage", core.endpoint, lost=0)
    old = recorders("p", "producer", core.endpoint)
    with Operator(core.endpoint) as op:
        events = Events(op)
        op.wait(op.prepare_run())
        assert op.wait(op.begin_run()).success
        # A restarted process on the same host under the same name, before the old one's
        # silence was noticed (here the old one is even still talking: the worst case).
        new = recorders("p", "producer", core.endpoint, pid=old.pid + 100000, wait=False)
        lost = events.wait("lost", "p")
        assert f"pid {new.pid} registered" in lost.message
        assert f"while pid {old.pid} was still considered alive" in lost.message
        events.wait("rejoined", "p")
        wait_for(lambda: new.state == "RUN")
        # The old process is told to stop rather than fight over the name.
        wait_for(lambda: old.error is not None)
        assert f"was replaced by pid {new.pid}" in old.error
        st = _status(op)
        assert st["state"] == "RUN"
        assert [c["pid"] for c in st["components"] if c["name"] == "p"] == [new.pid]
        assert st["counters"]["components_replaced"] == 1
        end = op.wait(op.end_run())
        assert end.data["run"]["exit_status"] == "success", end.data["run"]
        run = end.data["run"]
        assert _naming(run["incidents"], "p") in run["resolved_incidents"]


def test_another_host_or_role_cannot_take_the_name(make_core, recorders, spawn_component):
    core = make_core("--rejoin-grace", "20")
    recorders("st", "storage", core.endpoint, lost=0)
    alive = recorders("mon", "monitor", core.endpoint)
    board = spawn_component("board", core.endpoint)
    elsewhere = Component("mon", core.endpoint, role="monitor", heartbeat_interval=0.05)
    elsewhere.host = alive.host + "-other"
    impostor = Component("board", core.endpoint, role="monitor", heartbeat_interval=0.05)
    with Operator(core.endpoint) as op:
        events = Events(op)
        op.wait(op.prepare_run())
        assert op.wait(op.begin_run()).success
        try:
            elsewhere.start()
            wait_for(lambda: elsewhere.error is not None)
            assert "already registered" in elsewhere.error
            board.send_signal(signal.SIGKILL)
            events.wait("lost", "board")
            impostor.start()
            wait_for(lambda: impostor.error is not None)
            assert "kept for producer board" in impostor.error
            assert "a monitor cannot take it" in impostor.error
            assert [x["name"] for x in _status(op)["missing"]] == ["board"]
        finally:
            elsewhere.stop()
            impostor.stop()
        op.wait(op.reset()) if _status(op)["state"] == "ERROR" else op.wait(op.end_run())


def test_end_run_waits_for_a_missing_component(make_core, recorders, spawn_component):
    core = make_core("--rejoin-grace", "20")
    recorders("st", "storage", core.endpoint, lost=0)
    board = spawn_component("board", core.endpoint)
    with Operator(core.endpoint, timeout=30) as op:
        events = Events(op)
        op.wait(op.prepare_run())
        assert op.wait(op.begin_run()).success
        board.send_signal(signal.SIGKILL)
        events.wait("lost", "board")
        pending = op.end_run()
        assert isinstance(next(pending), Ack)
        waiting = next(pending)
        assert isinstance(waiting, Progress)
        assert "end waits for producer board (lost;" in waiting.data["waiting"]
        assert _status(op)["state"] == "STOPPING"
        spawn_component("board", core.endpoint)
        final = op.wait(pending)
        assert isinstance(final, Result) and final.success, final.message
        assert final.data["run"]["exit_status"] == "success"
        incidents = final.data["run"]["incidents"]
        assert "resolved" in incidents[_naming(incidents, "board")]


def test_end_run_fails_naming_a_component_that_does_not_return(make_core, recorders,
                                                                spawn_component):
    # The grace is long enough that end_run, sent as soon as the loss is known, arrives
    # within it even on a loaded machine: end_run waits for the board, then fails naming it.
    core = make_core("--rejoin-grace", "4")
    recorders("st", "storage", core.endpoint, lost=0)
    board = spawn_component("board", core.endpoint)
    with Operator(core.endpoint, timeout=30) as op:
        op.wait(op.prepare_run())
        assert op.wait(op.begin_run()).success
        board.send_signal(signal.SIGKILL)
        Events(op).wait("lost", "board")
        final = op.wait(op.end_run())
        assert not final.success
        assert "end_run failed: component board (producer) lost and did not register " \
               "again within 4 s; state is now ERROR" in final.message
        assert op.wait(op.end_run()).data["run"]["exit_status"] == "failed"
    db = RunDatabase(core.db)
    rec = db.list_runs()[0]
    db.close()
    assert rec.exit_status == "failed"
    about_board = [i for i, text in enumerate(rec.incidents) if "board" in text]
    assert about_board and not set(about_board) & set(rec.resolved_incidents)


def test_begin_run_brings_a_returning_component_along(make_core, recorders, spawn_component):
    core = make_core("--rejoin-grace", "20")
    st = recorders("st", "storage", core.endpoint, lost=0)
    board = spawn_component("board", core.endpoint)
    with Operator(core.endpoint, timeout=30) as op:
        events = Events(op)
        number = op.wait(op.prepare_run()).data["run_number"]
        board.send_signal(signal.SIGKILL)
        events.wait("lost", "board")
        assert _status(op)["state"] == "READY"
        pending = op.begin_run()
        replies = [next(pending) for _ in range(3)]  # ack, storage's group, the wait
        assert "begin waits for producer board" in replies[2].data["waiting"]
        assert st.state == "RUN"
        spawn_component("board", core.endpoint)  # a fresh process: prepare, then begin
        final = op.wait(pending)
        assert final.success, final.message
        status = _status(op)
        assert status["state"] == "RUN"
        assert {c["name"]: (c["state"], c["run_number"]) for c in status["components"]} == {
            "st": ("RUN", number), "board": ("RUN", number)}
        assert "resolved" in status["incidents"][_naming(status["incidents"], "board")]
        assert op.wait(op.end_run()).data["run"]["exit_status"] == "success"


def test_a_component_lost_before_the_core_restarts_resolves_its_incident_on_return(
        make_core, recorders, spawn_component):
    # The core goes down while a run member is missing; the member returns to the restarted
    # core: its open incident is put right, as without the restart, and the run succeeds.
    from larpixdaq.runcontrol.testing import CoreProcess

    core = make_core("--rejoin-grace", "20")
    recorders("st", "storage", core.endpoint, lost=0)
    board = spawn_component("board", core.endpoint)
    with Operator(core.endpoint) as op:
        events = Events(op)
        assert op.wait(op.prepare_run()).success
        assert op.wait(op.begin_run()).success
        board.send_signal(signal.SIGKILL)
        events.wait("lost", "board")
        # recorded (the event may go out just before the run database has the incident)
        wait_for(lambda: any("component board (" in i for i in _status(op)["incidents"]))
    core.kill()
    restarted = CoreProcess(core.db, endpoint=core.endpoint,
                            extra=["--rejoin-grace", "20"]).start()
    try:
        with Operator(restarted.endpoint) as op:
            wait_for(lambda: _status(op)["state"] == "RUN")
            spawn_component("board", restarted.endpoint)
            wait_for(lambda: not _status(op)["missing"], timeout=30)
            end = op.wait(op.end_run())
            assert end.success, end.message
            run = end.data["run"]
            lost = _naming(run["incidents"], "board")
            assert lost in run["resolved_incidents"], run["incidents"]
            assert run["exit_status"] == "success", run["incidents"]
    finally:
        restarted.terminate()
