"""Closing a run a whole DAQ left open: the run database and storage's files, for real."""

from __future__ import annotations

import pytest

from larpixdaq.pipeline.interrupted import CRASH_REASON, close_interrupted_run
from larpixdaq.runcontrol.rundb import RunDatabase, RunDatabaseError


def test_a_run_left_ready_without_files_is_closed_failed_and_the_core_starts_in_stop(tmp_path):
    db = RunDatabase(tmp_path / "runs.sqlite")
    run = db.allocate_run(state="READY").run_number
    db.set_participants(run, {"st": "storage", "board": "producer"})
    db.save_core_state("READY", run)
    db.close()

    closed = close_interrupted_run(tmp_path / "runs.sqlite", tmp_path)
    assert closed is not None and closed.run_number == run
    assert closed.state == "READY" and closed.exit_status == "failed"
    assert closed.files == [] and f"run {run} was left open in state READY" in closed.describe()

    db = RunDatabase(tmp_path / "runs.sqlite")
    try:
        record = db.get_run(run)
        assert record.end_time is not None and record.end_reason == CRASH_REASON
        assert record.exit_status == "failed"
        assert record.unresolved_incidents and "without ending it" in record.incidents[-1]
        assert db.load_core_state() == ("STOP", None)
        assert db.open_run() is None
    finally:
        db.close()
    # Closed once: nothing is left to close.
    assert close_interrupted_run(tmp_path / "runs.sqlite", tmp_path) is None


def test_it_refuses_while_a_core_holds_the_run_database(tmp_path):
    core = RunDatabase(tmp_path / "runs.sqlite", exclusive=True)
    try:
        with pytest.raises(RunDatabaseError):
            close_interrupted_run(tmp_path / "runs.sqlite", tmp_path)
    finally:
        core.close()
