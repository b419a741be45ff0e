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


def test_incidents_resolved_in_place(tmp_path):
    db = RunDatabase(tmp_path / "r.sqlite")
    run = db.allocate_run()
    first = db.add_incident(run.run_number, "component st (storage) lost")
    second = db.add_incident(run.run_number, "component p (producer) lost")
    assert (first, second) == (0, 1)
    db.resolve_incident(run.run_number, first, "storage st registered again after 1.20 s")
    db.resolve_incident(run.run_number, first, "twice changes nothing")
    rec = db.get_run(run.run_number)
    assert rec.resolved_incidents == [0]
    assert "component st (storage) lost; resolved 20" in rec.incidents[0]
    assert "registered again after 1.20 s" in rec.incidents[0]
    assert "twice" not in rec.incidents[0]
    assert rec.unresolved_incidents == [rec.incidents[1]]
    assert rec.to_dict()["resolved_incidents"] == [0]
    with pytest.raises(RunDatabaseError, match="has no incident 5"):
        db.resolve_incident(run.run_number, 5, "x")
    db.close()


def test_database_from_before_resolved_incidents_is_upgraded(tmp_path):
    path = tmp_path / "old.sqlite"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE runs (run_number INTEGER PRIMARY KEY AUTOINCREMENT,"
                " start_time REAL NOT NULL, begin_time REAL, end_time REAL, state TEXT NOT NULL,"
                " exit_status TEXT, comment TEXT NOT NULL DEFAULT '',"
                " run_type TEXT NOT NULL DEFAULT 'physics', data_dir TEXT NOT NULL DEFAULT '.',"
                " config_hash TEXT, config_snapshot TEXT, files TEXT NOT NULL DEFAULT '[]',"
                " counters TEXT NOT NULL DEFAULT '{}', roles TEXT NOT NULL DEFAULT '{}',"
                " participants TEXT NOT NULL DEFAULT '{}', incidents TEXT NOT NULL DEFAULT '[]',"
                " packets_written INTEGER NOT NULL DEFAULT 0,"
                " packets_lost INTEGER NOT NULL DEFAULT 0)")
    raw.execute("INSERT INTO runs (start_time, state, incidents) VALUES (1.0, 'STOP',"
                " '[\"old incident\"]')")
    raw.commit()
    raw.close()
    db = RunDatabase(path)
    rec = db.get_run(1)
    assert rec.incidents == ["old incident"] and rec.resolved_incidents == []
    assert rec.unresolved_incidents == ["old incident"]
    assert db.allocate_run().run_number == 2
    db.close()
