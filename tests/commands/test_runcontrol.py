"""The run-control commands against a real core process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from larpixdaq.cli import main
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.testing import CoreProcess


class Store(Component):
    role = "storage"

    def __init__(self, core):
        super().__init__("store", core, heartbeat_interval=0.05, core_timeout=0.5)
        self.n = 0

    def on_begin(self, run):
        self.n = 1234

    def on_end(self, run):
        return {"files": [f"{run.data_dir}/run{run.run_number}.h5"]}

    def counters(self):
        return {"packets_written": self.n, "packets_lost": 0}


@pytest.fixture
def store(core):
    s = Store(core.endpoint).start()
    assert s.wait_registered(5)
    yield s
    s.stop()


def test_status_json_and_text(core, store, capsys):
    assert main(["status", "--core", core.endpoint, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["state"] == "STOP" and st["components"][0]["name"] == "store"
    assert main(["status", "--core", core.endpoint]) == 0
    out = capsys.readouterr().out
    assert "state: STOP" in out and "store" in out and "storage" in out


def test_prepare_begin_end_and_runs(core, store, capsys, tmp_path):
    base = ["--core", core.endpoint]
    assert main(["prepare", *base, "--comment", "hi", "--data-dir", str(tmp_path)]) == 0
    assert main(["begin", *base]) == 0
    assert main(["end", *base]) == 0
    assert "run 1 ended (success)" in capsys.readouterr().out
    assert main(["runs", *base, "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs[0]["run_number"] == 1 and runs[0]["comment"] == "hi"
    assert runs[0]["packets_written"] == 1234
    assert runs[0]["files"] == [f"{tmp_path}/run1.h5"]
    assert main(["runs", "--db", str(core.db)]) == 0
    out = capsys.readouterr().out
    assert "success" in out and "1234" in out and "run1.h5" in out


def test_run_with_duration_prints_progress_and_summary(core, store, capsys):
    code = main(["run", "--core", core.endpoint, "--duration", "1.2", "--comment", "short",
                 "--run-type", "test"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "run 1 prepared" in out and "RUN" in out and "packets_written=1234" in out
    assert "run 1 ended: success" in out and "packets written 1234, lost 0" in out


def test_run_that_lost_packets_exits_nonzero_and_shows_degraded(core, store, capsys):
    store.counters = lambda: {"packets_written": 1234, "packets_lost": 7}
    code = main(["run", "--core", core.endpoint, "--duration", "0.3"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "run 1 ended: degraded" in out and "lost 7" in out
    assert main(["runs", "--db", str(core.db)]) == 0
    assert "degraded" in capsys.readouterr().out


def test_errors_exit_nonzero_with_one_line(core, capsys, tmp_path):
    assert main(["begin", "--core", core.endpoint]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot begin_run in state STOP" in err
    assert main(["invoke", "--core", core.endpoint, "nobody", "x", "a=1"]) == 1
    assert "no component named 'nobody'" in capsys.readouterr().err
    assert main(["invoke", "--core", core.endpoint, "nobody", "x", "junk"]) == 1
    assert "is not NAME=VALUE" in capsys.readouterr().err
    assert main(["runs", "--db", str(tmp_path / "none.sqlite")]) == 1
    assert "no run database" in capsys.readouterr().err


def test_unreachable_core_times_out_clearly(tmp_path):
    probe = CoreProcess(tmp_path / "p.sqlite").start()
    endpoint = probe.endpoint
    probe.terminate()
    proc = subprocess.run(
        [sys.executable, "-m", "larpixdaq.cli", "status", "--core", endpoint, "--timeout", "0.3"],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert "no answer from the core" in proc.stderr and proc.stderr.count("\n") == 1


def test_core_refuses_a_taken_address(core, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "larpixdaq.cli", "core", "--core", core.endpoint,
         "--db", str(tmp_path / "other.sqlite")],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1 and "cannot listen on" in proc.stderr


def test_env_default_address(monkeypatch, core, capsys):
    monkeypatch.setenv("LARPIX_DAQ_CORE", core.endpoint)
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "STOP"


def test_second_core_on_the_same_database_refused(core):
    proc = subprocess.run(
        [sys.executable, "-m", "larpixdaq.cli", "core", "--core", "tcp://127.0.0.1:0",
         "--db", str(core.db)],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1 and "in use by another core" in proc.stderr


def _cli_proc(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "larpixdaq.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_ctrl_c_on_run_ends_the_run_as_ended_by_the_operator(core, store):
    import signal

    from larpixdaq.runcontrol.rundb import RunDatabase

    proc = _cli_proc(["run", "--core", core.endpoint, "--duration", "120"])
    try:
        for line in proc.stdout:  # wait until it is taking data
            if "taking data" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted (SIGINT)" in err
    assert "ended by the operator" in out
    db = RunDatabase(core.db)
    try:
        run = db.get_run(1)
    finally:
        db.close()
    assert run.end_time is not None and run.state == "STOP"
    assert "ended by the operator" in run.end_reason and "SIGINT" in run.end_reason
    assert run.packets_written == 1234  # the End transition ran: storage reported


def test_runs_reads_the_database_itself_while_the_daq_is_down(tmp_path, capsys):
    data = tmp_path / "data"
    with CoreProcess(data / "runs.sqlite") as c:  # where `larpix-daq up` keeps it
        endpoint = c.endpoint
        assert main(["prepare", "--core", endpoint, "--comment", "before the outage"]) == 0
        assert main(["end", "--core", endpoint]) == 0
    capsys.readouterr()
    env = {k: v for k, v in os.environ.items() if k != "LARPIX_DAQ_DB"}
    proc = subprocess.run([sys.executable, "-m", "larpixdaq.cli", "runs", "--core", endpoint,
                           "--json"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"reading the run database {os.path.join('data', 'runs.sqlite')} directly" \
        in proc.stderr
    runs = json.loads(proc.stdout)
    assert [(r["run_number"], r["comment"], r["exit_status"]) for r in runs] == [
        (1, "before the outage", "aborted")]
    # Nowhere to read from: one line that says what to do.
    proc = subprocess.run([sys.executable, "-m", "larpixdaq.cli", "runs", "--core", endpoint],
                          capture_output=True, text=True, timeout=60, cwd=data, env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "does not answer" in proc.stderr and "give --db FILE" in proc.stderr


def test_core_address_without_scheme_is_accepted_and_nonsense_refused_in_one_line(core,
                                                                                  capsys):
    host_port = core.endpoint.removeprefix("tcp://")
    assert main(["status", "--core", host_port, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "STOP"
    for bad in ("localhost", "tcp://127.0.0.1:port", "udp://127.0.0.1:5550"):
        proc = subprocess.run([sys.executable, "-m", "larpixdaq.cli", "status", "--core", bad],
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "is not an address of the core" in proc.stderr and "Traceback" not in proc.stderr
