"""Losses during transitions and actions, and a core that restarts at awkward moments."""

from __future__ import annotations

import select
import signal

from larpixdaq import Operator
from larpixdaq.runcontrol.operator import Ack, Timeout
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


def test_component_lost_during_transition_fails_it_by_name(core, components, spawn_component):
    components("st", "storage")
    proc = spawn_component("board", core.endpoint, prepare_delay=30)
    with Operator(core.endpoint) as op:
        pending = op.prepare_run()
        assert isinstance(next(pending), Ack)
        wait_for(lambda: select.select([proc.stdout], [], [], 0.1)[0])
        assert proc.stdout.readline().strip() == "preparing"  # killed inside its prepare
        proc.send_signal(signal.SIGKILL)
        final = op.wait(pending)
        assert not final.success
        assert "component board (producer) lost" in final.message
        assert op.call("status").data["state"] == "ERROR"
        reset = op.wait(op.reset())
        assert reset.success and reset.data["run"]["exit_status"] == "failed"


def test_action_timed_out_gets_a_final_answer(core, components):
    slow = components("slow", "monitor")
    with Operator(core.endpoint) as op:
        final = op.wait(op.invoke("slow", "slow", seconds=1.5, timeout=0.5))
        assert not isinstance(final, Timeout)
        assert not final.success and "action slow on slow timed out" in final.message
        # The component's real answer comes later and is dropped by the core.
        running = op.invoke("slow", "slow", seconds=0.1)
        assert op.wait(running).success
        assert slow.control_counters["actions_run"] >= 1


def test_leaving_mid_run_is_an_incident(core, components):
    components("st", "storage")
    p = components("p", "producer")
    with Operator(core.endpoint) as op:
        op.wait(op.prepare_run())
        op.wait(op.begin_run())
        p.stop()
        wait_for(lambda: op.call("status").data["state"] == "ERROR")
        assert any("component p left" in i for i in op.call("status").data["incidents"])
        assert op.wait(op.end_run()).data["run"]["exit_status"] == "failed"


def test_restart_with_a_component_missing_goes_to_error(components_factory_for_restart):
    core, make = components_factory_for_restart
    make("st", "storage")
    p = make("p", "producer")
    with Operator(core.endpoint) as op:
        number = op.wait(op.prepare_run()).data["run_number"]
        op.wait(op.begin_run())
    core.kill()
    p.stop()  # dies while the core is away
    restarted = CoreProcess(core.db, endpoint=core.endpoint).start()
    try:
        with Operator(restarted.endpoint) as op:
            status = wait_for(lambda: (s := op.call("status").data)["state"] == "ERROR" and s,
                              timeout=6)
            assert status["run"]["run_number"] == number
            assert any("p did not register again" in i for i in status["incidents"])
            end = op.wait(op.end_run())
            assert end.success and end.data["run"]["exit_status"] == "failed"
            assert end.data["run"]["counters"].keys() == {"st"}
    finally:
        restarted.terminate()


def test_core_killed_mid_transition_restarts_in_error(components_factory_for_restart):
    core, make = components_factory_for_restart
    slow = make("slow", "producer", prepare_delay=0.8)
    with Operator(core.endpoint) as op:
        pending = op.prepare_run()
        assert isinstance(next(pending), Ack)
        wait_for(slow.preparing.is_set)  # the core dies while the transition is under way
        core.kill()
    restarted = CoreProcess(core.db, endpoint=core.endpoint).start()
    try:
        with Operator(restarted.endpoint) as op:
            status = op.call("status").data
            assert status["state"] == "ERROR"
            assert any("core restarted during PREPARING" in i for i in status["incidents"])
            wait_for(lambda: slow.registrations >= 2 and slow.state == "READY")
            reset = op.wait(op.reset())
            assert reset.success and reset.data["run"]["exit_status"] == "failed"
            assert slow.state == "STOP"
            nxt = op.wait(op.prepare_run())
            assert nxt.data["run_number"] == status["run"]["run_number"] + 1
            op.wait(op.end_run())
    finally:
        restarted.terminate()
