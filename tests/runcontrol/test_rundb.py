"""The SQLite run database: numbering never reused, records, totals, core state."""

from __future__ import annotations

import sqlite3

import pytest

from larpixdaq.runcontrol.rundb import RunDatabase, RunDatabaseError


def test_numbers_increase_and_survive_reopen_and_deletion(tmp_path):
    path = tmp_path / "runs.sqlite"
    db = RunDatabase(path)
    a = db.allocate_run(comment="first")
    b = db.allocate_run()
    assert (a.run_number, b.run_number) == (1, 2)
    db.close()
    # Someone deletes the latest run by hand; its number must still not come back.
    raw = sqlite3.connect(path)
    raw.execute("DELETE FROM runs WHERE run_number = 2")
    raw.commit()
    raw.close()
    db = RunDatabase(path)
    assert db.allocate_run().run_number == 3
    db.close()


def test_record_lifecycle_and_storage_totals(tmp_path):
    db = RunDatabase(tmp_path / "r.sqlite")
    run = db.allocate_run(run_type="calibration", comment="pedestal", config_hash="abc",
                          config_snapshot="/cfg/abc.json", data_dir="/data")
    db.set_participants(run.run_number, {"st": "storage", "p": "producer"})
    db.set_state(run.run_number, "RUN")
    db.set_begin_time(run.run_number, 5.0)
    assert db.open_run().run_number == run.run_number
    db.record_component(run.run_number, "p", "producer", {"packets_written": 99, "sent": 10})
    db.record_component(run.run_number, "st", "storage",
                        {"packets_written": 10, "packets_lost": 1}, files=["/data/run1.h5"])
    db.record_component(run.run_number, "st2", "storage", {"packets_written": 5},
                        files=["/data/run1b.h5", "/data/run1.h5"])
    db.add_incident(run.run_number, "component p lost")
    rec = db.finish_run(run.run_number, "failed", end_time=9.0)
    assert rec.packets_written == 15 and rec.packets_lost == 1
    assert rec.files == ["/data/run1.h5", "/data/run1b.h5"]
    assert rec.counters["p"] == {"packets_written": 99, "sent": 10}
    assert rec.exit_status == "failed" and rec.end_time == 9.0 and rec.begin_time == 5.0
    assert rec.state == "STOP" and rec.run_type == "calibration" and rec.config_hash == "abc"
    assert "component p lost" in rec.incidents[0]
    assert db.open_run() is None
    assert [r.run_number for r in db.list_runs()] == [run.run_number]
    db.close()


def test_errors(tmp_path):
    db = RunDatabase(tmp_path / "r.sqlite")
    with pytest.raises(RunDatabaseError, match="no run 7"):
        db.get_run(7)
    with pytest.raises(RunDatabaseError, match="no run 7"):
        db.set_state(7, "RUN")
    run = db.allocate_run()
    with pytest.raises(ValueError, match="exit status 'great'"):
        db.finish_run(run.run_number, "great")
    db.close()
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(RunDatabaseError, match="cannot open"):
        RunDatabase(tmp_path / "dir.sqlite")


def test_core_state(tmp_path):
    db = RunDatabase(tmp_path / "r.sqlite")
    assert db.load_core_state() == ("STOP", None)
    db.save_core_state("RUN", 4)
    db.close()
    assert RunDatabase(tmp_path / "r.sqlite").load_core_state() == ("RUN", 4)


def test_one_core_per_database(tmp_path):
    first = RunDatabase(tmp_path / "r.sqlite", exclusive=True)
    with pytest.raises(RunDatabaseError, match=r"in use by another core \(pid \d+\)"):
        RunDatabase(tmp_path / "r.sqlite", exclusive=True)
    reader = RunDatabase(tmp_path / "r.sqlite")  # readers (`runs --db`) are welcome
    reader.close()
    first.close()
    RunDatabase(tmp_path / "r.sqlite", exclusive=True).close()
