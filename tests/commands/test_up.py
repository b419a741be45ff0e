"""`larpix-daq up` as a real process tree: start, take a run, survive a killed child, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from larpixdaq.processes import process_alive
from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.testing import wait_for

CLI = [sys.executable, "-m", "larpixdaq.cli"]


def _free_base_port() -> int:
    """A port with the next dozen free too (the data path uses core port + 1..12)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 60000:
            continue
        ok = True
        for off in (1, 10, 11, 12):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", base + off))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError("no free port range")


def _child_pids(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _start_up(core: str, data, log_path, *extra: str) -> subprocess.Popen:
    log = open(log_path, "a")  # noqa: SIM115 - the child has its own copy
    try:
        return subprocess.Popen([*CLI, "up", "--core", core, "--data-dir", str(data),
                                 "--no-web", *extra], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def _stop_up(proc: subprocess.Popen) -> None:
    """SIGTERM `up` and wait; what outlives that (up or its children) is SIGKILLed."""
    children = _child_pids(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for pid in children:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def up(tmp_path):
    port = _free_base_port()
    core = f"tcp://127.0.0.1:{port}"
    proc = _start_up(core, tmp_path / "d", tmp_path / "up.log", "--board", "sim", "--board",
                     "sim", "--sim-rate", "50000")
    op = Operator(core, timeout=5)
    try:
        yield proc, op, core, tmp_path
    finally:
        if op is not None:
            op.close()
        _stop_up(proc)


def _components(op):
    final = op.call("clients")
    return {c["name"]: c for c in final.data["components"]} if final.success else {}


def test_up_runs_restarts_and_stops(up):
    proc, op, core, tmp = up
    names = {"logs", "aggregator", "storage", "producer-1", "producer-2"}
    wait_for(lambda: names <= set(_components(op)), timeout=30)
    out = subprocess.run([*CLI, "run", "--duration", "0.5", "--core", core],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = json.loads(subprocess.run([*CLI, "runs", "--json", "--core", core],
                                     capture_output=True, text=True, timeout=30).stdout)
    assert runs[0]["exit_status"] == "success"
    assert runs[0]["packets_written"] > 0 and runs[0]["packets_lost"] == 0
    assert runs[0]["files"] == [str(tmp / "d" / "run-000001.h5")]

    # A child that dies is started again.
    old_pid = _components(op)["producer-2"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: _components(op).get("producer-2", {}).get("pid", old_pid) != old_pid,
             timeout=30)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    children = subprocess.run(["pgrep", "-f", core], capture_output=True, text=True).stdout
    assert children.strip() == ""


def _up_args(tmp_path, *extra: str):
    import argparse

    from larpixdaq.commands.up import configure

    p = argparse.ArgumentParser()
    configure(p)
    return p.parse_args(["--data-dir", str(tmp_path / "d"), "--core", "tcp://127.0.0.1:5990",
                         *extra])


def test_up_detector_2x2_is_eight_sim_boards_on_io_groups_1_to_8(tmp_path):
    from larpixdaq.commands.up import build

    sup = build(_up_args(tmp_path, "--detector", "2x2", "--no-web"))
    producers = [c for c in sup.children if c.name.startswith("producer-")]
    assert [c.name for c in producers] == [f"producer-{g}" for g in range(1, 9)]
    for g, child in enumerate(producers, start=1):
        a = child.args
        assert a[a.index("--io-group") + 1] == str(g) and a[a.index("--board") + 1] == "sim"
        assert a[a.index("--detector") + 1] == "2x2"
    # without --detector: one standard sim tile, as before
    plain = [c for c in build(_up_args(tmp_path, "--no-web")).children
             if c.name.startswith("producer-")]
    assert [c.name for c in plain] == ["producer-1"] and "--detector" not in plain[0].args


def test_up_beam_reaches_every_sim_board_and_the_trigger_one_io_group(tmp_path):
    import argparse

    from larpixdaq.commands.common import beam_for
    from larpixdaq.commands.pipeline import configure_producer
    from larpixdaq.commands.up import build
    from larpixdaq.errors import CommandError

    sup = build(_up_args(tmp_path, "--detector", "2x2", "--no-web", "--beam",
                         "--beam-period", "0.5", "--trigger-io-group", "3"))
    producers = [c for c in sup.children if c.name.startswith("producer-")]
    p = argparse.ArgumentParser()
    configure_producer(p)
    for child in producers:
        args = p.parse_args(child.args[1:])  # what each producer will be started with
        assert args.beam and args.beam_period == 0.5 and args.trigger_io_group == 3
    monitor = next(c for c in sup.children if c.name == "monitor")
    assert monitor.args[monitor.args.index("--detector") + 1] == "2x2"
    # by default the trigger is on the lowest io_group; without --beam no beam at all
    default = build(_up_args(tmp_path, "--detector", "2x2", "--no-web", "--beam"))
    a = next(c for c in default.children if c.name == "producer-5").args
    assert a[a.index("--trigger-io-group") + 1] == "1"
    plain = build(_up_args(tmp_path, "--no-web"))
    assert all("--beam" not in c.args for c in plain.children)
    with pytest.raises(CommandError, match="--trigger-io-group 9: no board serves it"):
        build(_up_args(tmp_path, "--detector", "2x2", "--beam", "--trigger-io-group", "9"))
    with pytest.raises(CommandError, match="beam period must be at least 1 ms"):
        beam_for(p.parse_args(["--beam", "--beam-period", "0"]), 1, 1)


def test_up_refuses_an_unknown_detector(tmp_path):
    from larpixdaq.commands.up import build
    from larpixdaq.errors import CommandError

    with pytest.raises(CommandError, match="no detector"):
        build(_up_args(tmp_path, "--detector", str(tmp_path / "nope.yaml")))


def test_sim_producer_source_is_that_io_group_of_the_detector():
    from larpixdaq.commands.pipeline import make_source
    from larpixdaq.errors import CommandError

    src = make_source("sim", 2, detector="2x2", sim_rate=0)
    try:
        board = src.board
        assert board.tiles == 8 and board.io_group == 2
        # io_group 2 is anode 2 of module 1: tile 15 has 85 chips wired (the field's file)
        assert board.chips.n == 100 * 7 + 85
        assert set(board.chips.io_channel.tolist()) == set(range(1, 33)) - {27, 28, 30}
    finally:
        src.close()
    with pytest.raises(CommandError, match="no chips on io_group 9"):
        make_source("sim", 9, detector="2x2")


# --- stopping and starting again ------------------------------------------------------------

UP_COMPONENTS = {"logs", "aggregator", "storage", "producer-1"}


def _status(op) -> dict:
    final = op.call("status")
    return final.data if final.success else {}


def _storage_counters(op) -> dict:
    return next((c["counters"] for c in _status(op).get("components", [])
                 if c["role"] == "storage"), {})


def _one_up(tmp_path, *extra: str):
    core = f"tcp://127.0.0.1:{_free_base_port()}"
    data = tmp_path / "d"
    proc = _start_up(core, data, tmp_path / "up.log", "--sim-rate", "20000", *extra)
    return proc, core, data


def _log(tmp_path) -> str:
    return (tmp_path / "up.log").read_text()


def _operator(core: str):
    """An Operator acting as the local user, once `up` has made the token and every
    component has registered."""
    with Operator(core, timeout=10, credential=False) as anonymous:
        wait_for(lambda: set(_components(anonymous)) >= UP_COMPONENTS, timeout=60)
    return Operator(core, timeout=10)


def _taking_data(op) -> int:
    """Prepare and begin a run; wait until storage has committed data of it."""
    prepared = op.call("prepare_run", {"comment": "test"}, timeout=30)
    assert prepared.success, prepared.message
    begun = op.call("begin_run", timeout=30)
    assert begun.success, begun.message
    wait_for(lambda: _storage_counters(op).get("commits", 0) >= 3
             and _storage_counters(op).get("packets_written", 0) > 0, timeout=60)
    return prepared.data["run_number"]


def _run_record(data, number: int):
    from larpixdaq.runcontrol.rundb import RunDatabase

    db = RunDatabase(data / "runs.sqlite")
    try:
        return db.get_run(number)
    finally:
        db.close()


def _messages(path) -> list[str]:
    from larpixdaq.formats.hdf5file import Hdf5File

    with Hdf5File(path) as f:
        return [m.decode() for m in f.messages()["message"]]


def _info(path):
    from larpixdaq.formats.hdf5file import Hdf5File

    with Hdf5File(path) as f:
        return f.info()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_or_hangup_ends_the_run_before_the_components_stop(tmp_path, sig):
    proc, core, data = _one_up(tmp_path)
    op = None
    try:
        op = _operator(core)
        # Short-lived clients that the core then sends events to (they are gone by then).
        for _ in range(2):
            subprocess.run([*CLI, "status", "--core", core], capture_output=True, timeout=60)
        number = _taking_data(op)
        # As the terminal does: the signal goes to the whole foreground process group.
        os.killpg(proc.pid, sig)
        assert proc.wait(90) == 0
    finally:
        if op is not None:
            op.close()
        _stop_up(proc)
    log = _log(tmp_path)
    record = _run_record(data, number)
    assert record.end_time is not None, log
    assert record.exit_status == "success", (record.incidents, log)
    assert "DAQ shut down by the operator" in record.end_reason
    assert signal.Signals(sig).name in record.end_reason
    assert record.packets_written > 0
    first = data / f"run-{number:06d}.h5"
    assert record.files == [str(first)]
    info = _info(first)
    assert info.clean_close is True and info.checksum
    assert _messages(first)[-1] == "Ending run"
    assert f"ending run {number} before stopping the DAQ" in log
    assert log.index(f"run {number} ended (success)") < log.index("[up] storage stopped")
    # the core's notes about events to clients that have gone are not on the console
    assert "dropped a message" not in log


def test_a_whole_daq_restarted_after_a_crash_closes_the_run_and_starts_in_stop(tmp_path):
    from larpixdaq.pipeline.interrupted import CRASH_REASON

    proc, core, data = _one_up(tmp_path)
    op = None
    try:
        op = _operator(core)
        number = _taking_data(op)
        # A crash: every process of the DAQ dies at once, nothing is ended.
        children = _child_pids(proc.pid)
        assert len(children) >= len(UP_COMPONENTS) + 1
        for pid in [proc.pid, *children]:
            os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(process_alive(p) for p in children), timeout=30)
        written_before = _storage_journal_packets(data, number)
        assert written_before > 0

        proc = _start_up(core, data, tmp_path / "up.log", "--sim-rate", "20000")
        wait_for(lambda: set(_components(op)) >= UP_COMPONENTS, timeout=60)
        st = _status(op)
        assert st["state"] == "STOP" and st["run"] is None, st
        # Give a resumed run time to show itself: nothing is produced or written.
        wait_for(lambda: all(c["state"] == "STOP" for c in _status(op)["components"]),
                 timeout=30)
        comps = _status(op)["components"]
        assert all(c["counters"].get("packets_sent", 0) == 0 for c in comps
                   if c["role"] == "producer"), comps
        record = _run_record(data, number)
        assert record.exit_status == "failed" and record.end_reason == CRASH_REASON
        assert any("without ending it" in i for i in record.incidents)
        assert record.packets_written >= written_before
        for f in record.files:
            info = _info(f)
            assert info.clean_close is True and info.checksum, f
        assert f"run {number} was left open in state RUN" in _log(tmp_path)
        # The next run is a run of its own, and a clean one.
        out = subprocess.run([*CLI, "run", "--duration", "1", "--core", core],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"run {number + 1} ended: success" in out.stdout
    finally:
        if op is not None:
            op.close()
        _stop_up(proc)


def _storage_journal_packets(data, number: int) -> int:
    from larpixdaq.pipeline.runjournal import journal_path, read_journal

    commits = [r for r in read_journal(journal_path(data, number)) if "part" in r]
    return commits[-1]["counters"]["packets_written"] if commits else 0


def test_a_second_up_refuses_at_once_and_starts_nothing(tmp_path):
    proc, core, data = _one_up(tmp_path)
    op = None
    try:
        op = _operator(core)
        before = {n: c["pid"] for n, c in _components(op).items()}
        # Same data directory: the lock names the first one.
        same = subprocess.run([*CLI, "up", "--core", core, "--data-dir", str(data), "--no-web"],
                              capture_output=True, text=True, timeout=60)
        assert same.returncode == 1
        assert f"another larpix-daq up (pid {proc.pid}) is running" in same.stderr
        # Another data directory, same core address: the port is in use.
        other = subprocess.run([*CLI, "up", "--core", core, "--data-dir",
                                str(tmp_path / "other"), "--no-web"],
                               capture_output=True, text=True, timeout=60)
        assert other.returncode == 1
        assert "port" in other.stderr and "in use" in other.stderr
        for out in (same, other):
            assert "[core]" not in out.stdout and "[producer" not in out.stdout
        after = {n: c["pid"] for n, c in _components(op).items()}
        assert after == before
        assert not (tmp_path / "other" / "runs.sqlite").exists()
    finally:
        if op is not None:
            op.close()
        _stop_up(proc)


def test_up_passes_its_options_on_to_the_core_storage_and_producers(tmp_path):
    import subprocess
    import sys

    from larpixdaq.commands.up import build

    sup = build(_up_args(tmp_path, "--no-web", "--board", "sim", "--board", "sim",
                         "--rejoin-grace", "20", "--hold-mb", "64", "--spill-dir",
                         str(tmp_path / "spill"), "--no-sync"))
    children = {c.name: c.args for c in sup.children}
    core = children["core"]
    assert float(core[core.index("--rejoin-grace") + 1]) == 20
    assert "--no-sync" in children["storage"]
    assert "--no-sync" not in {c.name: c.args for c in build(_up_args(
        tmp_path / "synced", "--no-web")).children}["storage"]
    for name in ("producer-1", "producer-2"):
        a = children[name]
        assert float(a[a.index("--hold-mb") + 1]) == 64
        assert a[a.index("--spill-dir") + 1] == str(tmp_path / "spill")
    # The options the children get are ones they take.
    for args in (core, children["producer-1"], children["storage"]):
        out = subprocess.run([sys.executable, "-m", "larpixdaq.cli", args[0], "--help"],
                             capture_output=True, text=True, timeout=60)
        assert all(o in out.stdout for o in args if o.startswith("--"))


def test_up_with_keys_admits_key_holders_only(tmp_path):
    from larpixdaq.runcontrol.operator import Timeout
    from larpixdaq.runcontrol.security import create_keys

    keys = tmp_path / "keys"
    create_keys(keys)
    proc, core, _ = _one_up(tmp_path, "--no-web", "--keys", str(keys))
    try:
        with Operator(core, timeout=10, credential=False, keys=keys) as keyed:
            wait_for(lambda: set(_components(keyed)) >= UP_COMPONENTS, timeout=60)
        with Operator(core, timeout=10, keys=keys) as op:
            _taking_data(op)  # the data path carries data with keys on every socket
            assert op.call("end_run", timeout=30).success
        with Operator(core, timeout=1, credential=False) as keyless:
            assert isinstance(keyless.call("status"), Timeout)
    finally:
        _stop_up(proc)
