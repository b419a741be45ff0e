"""The core with its run database on a disk that fills up: it never freezes, it refuses
new runs with the reason, and everything it could not write reaches the disk later."""

from __future__ import annotations

from larpixdaq import Operator
from larpixdaq.runcontrol.rundb import RunDatabase
from larpixdaq.runcontrol.testing import CoreProcess


def test_core_carries_on_with_its_database_disk_full(small_disk, recorders):
    db = small_disk.path / "runs.sqlite"
    with CoreProcess(db) as core:
        recorders("st", "storage", core.endpoint)
        recorders("p", "producer", core.endpoint)
        with Operator(core.endpoint) as op:
            first = op.wait(op.prepare_run(comment="before")).data["run_number"]
            assert op.wait(op.begin_run()).success
            small_disk.fill()
            # Ending the run writes counters, the exit status and the core's state: none
            # fit, and the run still ends.
            end = op.wait(op.end_run())
            assert end.success, end.message
            assert end.data["run"]["exit_status"] == "success"
            status = op.call("status").data
            assert status["state"] == "STOP"
            assert status["counters"]["db_write_errors"] > 0
            assert status["counters"]["db_runs_unwritten"] == 1
            assert "full" in status["db_error"]
            # The run as the core knows it, although the disk does not have it yet.
            listed = op.call("runs").data["runs"][0]
            assert listed["run_number"] == first and listed["exit_status"] == "success"
            # No new run number can be put on disk: refused, with the reason.
            refused = op.wait(op.prepare_run())
            assert not refused.success
            assert "run database" in refused.message and "cannot be written" in refused.message
            assert op.call("status").data["state"] == "STOP"
            # Room again: the next run is taken, and the first run's end reaches the disk.
            small_disk.free()
            second = op.wait(op.prepare_run(comment="after"))
            assert second.success, second.message
            assert second.data["run_number"] == first + 1
            assert op.wait(op.end_run()).data["run"]["exit_status"] == "aborted"
            assert op.call("status").data["counters"]["db_runs_unwritten"] == 0
    on_disk = RunDatabase(db)
    try:
        runs = {r.run_number: r for r in on_disk.list_runs()}
        assert on_disk.pending == {}
        audit = on_disk.list_audit()
    finally:
        on_disk.close()
    assert runs[first].exit_status == "success" and runs[first].end_time is not None
    assert runs[first].counters["st"]["packets_written"] == 10
    assert runs[first + 1].exit_status == "aborted"
    # The audit trail kept the requests made while the disk was full, in order, with their
    # outcome.
    made = [(a["command"], a["result"]) for a in reversed(audit)
            if a["command"] in ("prepare_run", "end_run")]
    assert made == [("prepare_run", "success"), ("end_run", "success"),
                    ("prepare_run", "failed"), ("prepare_run", "success"),
                    ("end_run", "success")]
