"""The log collector: records from components reach the file and console; junk is counted."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import msgpack
import pytest
import zmq

from larpixdaq.pipeline.logcollector import LogCollector
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.logforward import LogForwarder, encode_record
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


@pytest.fixture
def core(tmp_path):
    with CoreProcess(tmp_path / "runs.sqlite") as c:
        yield c


def _records(path) -> list[dict]:
    """The whole JSON lines of the log file (the collector may be writing the last one)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(x) for x in text[:text.rfind("\n") + 1].splitlines()]


def test_records_from_a_component_reach_file_and_console(core, tmp_path):
    console = io.StringIO()
    collector = LogCollector("logs", core.endpoint, bind="tcp://127.0.0.1:0",
                             path=tmp_path / "daq.log", console=console,
                             heartbeat_interval=0.05).start()
    board = Component("board", core.endpoint, role="producer", heartbeat_interval=0.05)
    try:
        # The core forwards its records once the collector has registered (the core handles
        # one message at a time): the board registers after that, so the core's record of
        # it must reach the file. Started together, the board could register first.
        assert collector.wait_registered(30)
        board.start()
        assert board.wait_registered(30)
        wait_for(lambda: board.services.get("logs") == collector.endpoint)
        board.log.warning("threshold %d too low", 7)

        def warnings():
            return [r for r in _records(tmp_path / "daq.log")
                    if r["message"] == "threshold 7 too low"]

        rec = wait_for(warnings)[0]
        assert rec["level"] == "WARNING" and rec["component"] == "board"
        assert rec["logger"] == "larpixdaq.component.board"
        wait_for(lambda: "threshold 7 too low" in console.getvalue())
        from larpixdaq import Operator

        with Operator(core.endpoint) as op:
            assert op.wait(op.prepare_run()).success

        def prepared_by_both():
            return {r["component"] for r in _records(tmp_path / "daq.log")
                    if r["message"] == "prepare done (run 1)"}

        wait_for(lambda: prepared_by_both() == {"board", "logs"})

        def board_registered_says_core():
            return [r for r in _records(tmp_path / "daq.log") if r["component"] == "core"
                    and "component board (producer) registered" in r["message"]]

        wait_for(board_registered_says_core)
    finally:
        board.stop()
        collector.stop()
    assert not [h for h in logging.getLogger("larpixdaq").handlers
                if isinstance(h, LogForwarder)]


def test_malformed_records_are_counted(core, tmp_path):
    collector = LogCollector("logs", core.endpoint, bind="tcp://127.0.0.1:0",
                             path=tmp_path / "daq.log", console=None).start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(collector.endpoint)
    try:
        push.send(b"\xc1")
        push.send(msgpack.packb({"v": 1, "time": "noon"}))
        rec = logging.LogRecord("larpixdaq.x", logging.INFO, __file__, 1, "ok %s", ("fine",),
                                None)
        push.send(encode_record(rec, "tester"))

        def tester_written():
            # The collector may count the malformed records before its file exists: it is
            # opened with the first record written.
            log = tmp_path / "daq.log"
            text = log.read_text() if log.exists() else ""
            whole = text[:text.rfind("\n") + 1].splitlines()  # a line being written waits
            return [r for r in map(json.loads, whole) if r["component"] == "tester"]

        wait_for(lambda: collector.malformed == 2 and tester_written())
        counters = collector.counters()
        assert counters["records_malformed"] == 2
        assert counters["records_received"] == counters["records_written"] + 2
        assert "field 'time'" in collector.last_error
    finally:
        push.close(0)
        collector.stop()


def test_logs_command_runs_a_collector(core, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "larpixdaq.cli", "logs", "--core", core.endpoint,
         "--bind", "tcp://127.0.0.1:0", "--file", str(tmp_path / "x.log"), "--quiet"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("log collector logs on tcp://127.0.0.1:")
        from larpixdaq import Operator

        with Operator(core.endpoint) as op:
            comps = wait_for(lambda: op.call("clients").data["components"])
        assert comps[0]["role"] == "log" and "logs" in comps[0]["endpoints"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()


def test_a_full_disk_costs_records_counted_never_the_collector(core, small_disk):
    path = small_disk.path / "daq.log"
    collector = LogCollector("logs", core.endpoint, bind="tcp://127.0.0.1:0", path=path,
                             console=None).start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(collector.endpoint)

    def send(text):
        rec = logging.LogRecord("larpixdaq.x", logging.INFO, __file__, 1, text, (), None)
        push.send(encode_record(rec, "tester"))

    def written(text):
        return [r for r in _records(path) if r["message"] == text]

    try:
        send("before")
        wait_for(lambda: written("before"))
        small_disk.fill()
        # The log file's last page may still take a few lines; 200 of 1 kB cannot fit.
        for i in range(200):
            send(f"while full {i} " + "x" * 1000)
        wait_for(lambda: collector.counters()["records_received"] >= 201)
        assert collector.counters()["records_dropped"] > 150
        assert "No space left on device" in collector.last_error
        small_disk.free()
        send("after")  # the same collector writes again, no restart
        wait_for(lambda: written("after"))
        assert any(t.name.endswith("-main") and t.is_alive() for t in collector._threads)
        c = collector.counters()
        assert c["records_received"] == c["records_written"] + c["records_dropped"]
    finally:
        push.close(0)
        collector.stop()
