"""The core as a real process: full cycles, ordering, refusals, losses, restarts, time-outs."""

from __future__ import annotations

import zmq

from larpixdaq import Operator
from larpixdaq.runcontrol.operator import Ack, Progress, Result
from larpixdaq.runcontrol.rundb import RunDatabase
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


def _events(op, kind, timeout=3.0):
    found = []

    def seen():
        found.extend(e for e in op.poll_events(0.05) if e.kind == kind)
        return found

    return wait_for(seen, timeout)


def test_full_cycle_in_role_order(core, components):
    st = components("st", "storage")
    components("agg", "aggregator")
    components("mon", "monitor")
    components("p1", "producer")
    components("p0", "producer")
    journal = components.journal
    with Operator(core.endpoint) as op:
        responses = list(op.prepare_run(comment="cosmics", run_type="physics"))
        assert isinstance(responses[0], Ack)
        assert any(isinstance(r, Progress) for r in responses)
        final = responses[-1]
        assert isinstance(final, Result) and final.success, final.message
        number = final.data["run_number"]
        assert st.runs_seen[-1].comment == "cosmics" and st.run.run_number == number
        assert op.wait(op.begin_run()).success
        assert op.call("status").data["state"] == "RUN"
        end = op.wait(op.end_run())
        assert end.success, end.message
        assert end.data["run"]["exit_status"] == "success"

    def order(step):
        return [name for name, s, _ in journal if s == step]

    prep = order("prepare")
    assert prep[0] == "st" and set(prep[1:3]) == {"agg", "mon"} and set(prep[3:]) == {"p0", "p1"}
    begin = order("begin")
    assert begin[:3] == ["st", "agg", "mon"] and set(begin[3:]) == {"p0", "p1"}
    end = order("end")
    assert set(end[:2]) == {"p0", "p1"} and end[2:] == ["agg", "mon", "st"]
    db = RunDatabase(core.db)
    rec = db.get_run(number)
    db.close()
    assert rec.exit_status == "success" and rec.end_time >= rec.begin_time >= rec.start_time
    assert rec.comment == "cosmics" and rec.run_type == "physics"
    assert rec.files == [f"/data/run{number}-st.h5"]
    assert rec.packets_written == 10 and rec.packets_lost == 0
    assert rec.counters["p0"]["packets_sent"] == 10
    assert rec.counters["p0"]["malformed_messages"] == 0
    assert rec.roles["st"] == "storage"


def _one_run(core):
    with Operator(core.endpoint) as op:
        assert op.wait(op.prepare_run()).success
        assert op.wait(op.begin_run()).success
        end = op.wait(op.end_run())
    assert end.success, end.message
    return end


def test_lost_packets_make_the_run_degraded(core, components):
    components("st", "storage", lost=1)
    components("p", "producer")
    end = _one_run(core)
    run = end.data["run"]
    assert run["exit_status"] == "degraded" and run["packets_lost"] == 1
    assert "(degraded): st.packets_lost 1" in end.message
    db = RunDatabase(core.db)
    rec = db.get_run(run["run_number"])
    db.close()
    assert rec.exit_status == "degraded"


def test_a_refused_frame_or_unfinished_stream_makes_the_run_degraded(core, components):
    components("st", "storage", extra={"streams_unfinished": 1})
    agg = components("agg", "aggregator", extra={"run_bad_messages": 2})
    end = _one_run(core)
    assert end.data["run"]["exit_status"] == "degraded"
    assert "agg.run_bad_messages 2" in end.message and "st.streams_unfinished 1" in end.message
    # A counter that is a loss for one role means nothing for another: a producer's
    # malformed credit messages lose no data.
    agg.extra = {}
    components.made[0].extra = {}
    components("p", "producer", extra={"run_bad_messages": 5, "bad_messages": 3})
    assert _one_run(core).data["run"]["exit_status"] == "success"


def test_run_numbers_increase_and_aliases(core, components):
    components("st", "storage")
    with Operator(core.endpoint) as op:
        numbers = []
        for _ in range(2):
            numbers.append(op.wait(op.prepare_physics_run("x")).data["run_number"])
            assert op.wait(op.begin_physics_run()).success
            assert op.wait(op.end_physics_run()).success
        assert numbers[1] == numbers[0] + 1
        # Ending from READY closes the run as aborted.
        op.wait(op.prepare_run())
        assert op.wait(op.end_run()).data["run"]["exit_status"] == "aborted"


def test_refused_transitions_are_clear(core, components):
    components("p", "producer")
    with Operator(core.endpoint) as op:
        final = op.call("begin_run")
        assert not final.success
        assert "cannot begin_run in state STOP" in final.message
        assert final.data["allowed"] == ["prepare_run"]
        assert not op.call("end_run").success
        assert not op.call("reset").success
        assert not op.call("fly").success and "unknown command 'fly'" in op.call("fly").message
        assert op.call("status").data["state"] == "STOP"


def test_core_killed_and_restarted_mid_run(tmp_path, components_factory_for_restart):
    core, make = components_factory_for_restart
    st = make("st", "storage")
    p = make("p", "producer")
    with Operator(core.endpoint) as op:
        number = op.wait(op.prepare_run(comment="long")).data["run_number"]
        assert op.wait(op.begin_run()).success
    core.kill()
    endpoint = core.endpoint
    restarted = CoreProcess(core.db)
    restarted.endpoint = endpoint
    restarted.start()
    try:
        wait_for(lambda: st.registrations >= 2 and p.registrations >= 2, timeout=5)
        with Operator(endpoint) as op:
            status = op.call("status").data
            assert status["state"] == "RUN"
            assert status["run"]["run_number"] == number
            assert sorted(c["name"] for c in status["components"]) == ["p", "st"]
            assert st.state == "RUN" and p.state == "RUN"
            end = op.wait(op.end_run())
            assert end.success and end.data["run"]["exit_status"] == "success", end.message
            assert end.data["run"]["comment"] == "long"
            nxt = op.wait(op.prepare_run())
            assert nxt.data["run_number"] == number + 1
            op.wait(op.end_run())
    finally:
        restarted.terminate()


def test_ack_timeout_names_the_component_and_reset_recovers(core, components):
    components("st", "storage")
    components("slowboard", "producer", prepare_delay=1.6)
    with Operator(core.endpoint) as op:
        final = op.wait(op.prepare_run())
        assert not final.success
        assert "producer slowboard did not acknowledge prepare" in final.message
        assert op.call("status").data["state"] == "ERROR"
        assert op.call("begin_run").message.startswith("cannot begin_run in state ERROR")
        reset = op.wait(op.reset())
        assert reset.success, reset.message
        assert reset.data["run"]["exit_status"] == "failed"
        assert op.call("status").data["state"] == "STOP"


def test_late_joiner_brought_to_run(core, components):
    components("st", "storage")
    with Operator(core.endpoint) as op:
        number = op.wait(op.prepare_run(comment="late")).data["run_number"]
        assert op.wait(op.begin_run()).success
        late = components("late", "producer")
        wait_for(lambda: late.state == "RUN")
        assert late.run.run_number == number and late.run.comment == "late"
        assert [s for n, s, _ in components.journal if n == "late"] == ["prepare", "begin"]
        assert op.wait(op.end_run()).success
        assert late.state == "STOP"


def test_malformed_messages_counted_and_ignored(core, components):
    components("st", "storage")
    ctx = zmq.Context.instance()
    bad = ctx.socket(zmq.DEALER)
    bad.setsockopt(zmq.LINGER, 0)
    bad.connect(core.endpoint)
    try:
        bad.send(b"\x00\xffnot msgpack")
        bad.send_multipart([b"two", b"frames"])
        import msgpack

        bad.send(msgpack.packb({"v": 1, "type": "command", "id": 5}))
        bad.send(msgpack.packb({"v": 7, "type": "command", "id": "x", "command": "status"}))
        with Operator(core.endpoint) as op:
            status = wait_for(lambda: (s := op.call("status").data)["counters"][
                "malformed_messages"] >= 4 and s)
            assert status["state"] == "STOP"
            assert "protocol version 7" in status["last_malformed"]
            assert op.wait(op.prepare_run()).success
            assert op.wait(op.end_run()).success
    finally:
        bad.close(0)


def test_a_message_the_core_does_not_take_is_counted(core):
    from larpixdaq.runcontrol import messages as m

    peer = zmq.Context.instance().socket(zmq.DEALER)
    peer.setsockopt(zmq.LINGER, 0)
    peer.connect(core.endpoint)
    try:
        peer.send(m.encode(m.Event(kind="lost", message="core -> operator only")))
        with Operator(core.endpoint) as op:
            wait_for(lambda: op.call("status").data["counters"]["unexpected_messages"] == 1)
            assert op.call("ping").success
    finally:
        peer.close(0)


def test_messages_to_a_vanished_peer_are_counted(core):
    from larpixdaq.runcontrol import messages as m

    ghost = zmq.Context.instance().socket(zmq.DEALER)
    ghost.setsockopt(zmq.LINGER, 0)
    ghost.connect(core.endpoint)
    ghost.send(m.encode(m.Register(name="ghost", role="producer", host="h", pid=1, actions={},
                                   counters=[], state="STOP", run_number=None,
                                   endpoints={})))
    assert ghost.poll(3000)  # welcomed
    ghost.close(0)  # gone without a goodbye: the core's heartbeats now reach nobody
    with Operator(core.endpoint) as op:
        wait_for(lambda: op.call("status").data["counters"]["messages_unsent"] >= 1)
        assert op.call("ping").success  # and it keeps serving the others


def test_duplicate_name_refused(core, components):
    from larpixdaq.runcontrol.component import Component

    components("same", "monitor")
    other = Component("same", core.endpoint, heartbeat_interval=0.05)
    other.pid = other.pid + 100000  # another process claiming the name
    other.start()
    try:
        wait_for(lambda: other.error is not None)
        assert "already registered" in other.error
    finally:
        other.stop()


def test_bad_parameters_refused_and_core_keeps_serving(core, components):
    components("st", "storage")
    with Operator(core.endpoint) as op:
        r = op.call("prepare_run", {"comment": 5})
        assert not r.success and "parameters comment are not accepted" in r.message
        r = op.call("prepare_run", {"colour": "red"})
        assert not r.success and "colour" in r.message
        r = op.call("runs", {"limit": "many"})
        assert not r.success and "bad parameters for runs" in r.message
        r = op.call("run", {"run_number": 99})
        assert not r.success and "no run 99" in r.message
        assert op.call("status").data["state"] == "STOP"
        prepared = op.wait(op.prepare_run(comment="fine"))
        assert prepared.success
        number = prepared.data["run_number"]
        assert op.call("run", {"run_number": number}).data["run"]["comment"] == "fine"
        assert op.wait(op.end_run()).success


def test_joining_during_a_transition_is_caught_up_after_it(core, components):
    components("st", "storage", prepare_delay=0.5)
    with Operator(core.endpoint) as op:
        pending = op.prepare_run()
        assert isinstance(next(pending), Ack)
        late = components("late", "producer")
        assert op.wait(pending).success
        wait_for(lambda: late.state == "READY")
        steps = [(n, s) for n, s, _ in components.journal]
        assert steps.index(("late", "prepare")) > steps.index(("st", "prepare"))
        assert op.wait(op.begin_run()).success
        assert late.state == "RUN"
        end = op.wait(op.end_run())
        assert "late" in end.data["run"]["counters"]
