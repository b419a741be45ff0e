"""CURVE keys on the data path, against real processes: with keys configured, a process
without an authorised key cannot join the aggregator (as producer, storage or monitor) nor
the log collector, and a registered name can be taken over only with the same key."""

from __future__ import annotations

import json
import logging

import pytest
import zmq
from daq_procs import Daq
from datagen import make_frames, make_messages

from larpixdaq.pipeline.logcollector import LogCollector
from larpixdaq.pipeline.protocol import (
    Frame,
    ProducerHello,
    StorageHello,
    parse_monitor_message,
)
from larpixdaq.runcontrol import logforward
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.security import ClientKeys, create_keys
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    create_keys(d)
    create_keys(d, "board-3")  # another authorised pair
    create_keys(d, "intruder")
    (d / "authorized" / "intruder.key").unlink()  # has a pair, but is not authorised
    return d


def _counter(daq: Daq, role: str, name: str) -> int:
    return sum(c.get("counters", {}).get(name, 0) for c in daq.clients() if c["role"] == role)


def _sock(kind: int, address: str, keys: ClientKeys | None, socks: list) -> zmq.Socket:
    s = zmq.Context.instance().socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        keys.apply(s)
    s.connect(address)
    socks.append(s)
    return s


def test_without_an_authorised_key_nothing_joins_the_data_path(tmp_path, keys, monkeypatch):
    monkeypatch.setenv("LARPIX_DAQ_KEYS", str(keys))  # every component process and the operator
    daq = Daq(tmp_path, boards=1, rate=50_000)
    daq.core.extra += ["--keys", str(keys)]
    socks: list[zmq.Socket] = []
    try:
        daq.start()
        daq.call("prepare_run")
        daq.call("begin_run")
        run_number = daq.op.call("status").data["run"]["run_number"]
        wait_for(lambda: _counter(daq, "storage", "packets_written") > 0)  # keys: data flows
        monitor = [w for w in daq.procs[0].first_line.replace(",", " ").split()
                   if "://" in w][2]
        # A monitor with the component key gets the feed.
        keyed = _sock(zmq.SUB, monitor, ClientKeys.load(keys), socks)
        keyed.setsockopt(zmq.SUBSCRIBE, b"")
        header = wait_for(lambda: keyed.poll(100) and parse_monitor_message(
            keyed.recv_multipart()))
        assert header is not None
        # Processes without a key, or with a key that is not authorised: as a producer, a
        # storage and a monitor.
        intruder = ClientKeys.load(keys, "intruder")
        before = {k: _counter(daq, "aggregator", k) for k in (
            "producer_hellos", "storage_hellos", "storage_hellos_refused", "bad_messages",
            "frames_not_admitted", "frames_in")}
        frames = make_frames("intruder", 7, make_messages(4, 20, words=100), run=run_number)
        subs = []
        for k in (None, intruder):
            prod = _sock(zmq.DEALER, daq.inlet, k, socks)
            prod.send_multipart(ProducerHello("intruder", 7).parts())
            for h, payload in frames:
                prod.send_multipart(Frame(h, payload).parts())
            store = _sock(zmq.DEALER, daq.outlet, k, socks)
            store.send_multipart(StorageHello((), 1 << 30).parts())
            sub = _sock(zmq.SUB, monitor, k, socks)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            subs.append((prod, store, sub))
        # While the keyed monitor keeps getting frames, the others get nothing at all.
        for _ in range(3):
            assert wait_for(lambda: keyed.poll(100) and keyed.recv_multipart())
        for prod, store, sub in subs:
            assert not prod.poll(0) and not store.poll(0) and not sub.poll(0)
        frames_in = _counter(daq, "aggregator", "frames_in")
        wait_for(lambda: _counter(daq, "aggregator", "frames_in") > frames_in)  # heartbeats on
        after = {k: _counter(daq, "aggregator", k) for k in before}
        for k in ("producer_hellos", "storage_hellos", "storage_hellos_refused",
                  "bad_messages", "frames_not_admitted"):
            assert after[k] == before[k], k  # the aggregator never heard them
        final = daq.op.end_run().wait()
        assert final.success, final.message
        run = daq.runs_json()[0]
        assert run["exit_status"] == "success", final.message
        assert run["packets_written"] > 0
    finally:
        for s in socks:
            s.close(0)
        daq.close()


def test_a_registered_name_is_taken_over_only_with_its_key(tmp_path, keys):
    with CoreProcess(tmp_path / "runs.sqlite", ["--keys", str(keys)]) as core:
        real = Component("storage", core.endpoint, role="storage", keys=keys,
                         heartbeat_interval=0.05).start()
        try:
            assert real.wait_registered(5)
            # Another authorised key, same name and role, a made-up pid: refused.
            other = Component("storage", core.endpoint, role="storage",
                              keys=ClientKeys.load(keys, "board-3"), heartbeat_interval=0.05)
            other.pid = real.pid + 12345
            other.start()
            try:
                wait_for(lambda: other.error is not None)
                assert "another key" in other.error
                assert not other.wait_registered(0)
            finally:
                other.stop()
            # The same key (a restarted process of the same component) may take it over.
            again = Component("storage", core.endpoint, role="storage", keys=keys,
                              heartbeat_interval=0.05)
            again.pid = real.pid + 54321
            again.start()
            try:
                assert again.wait_registered(5)
            finally:
                again.stop()
        finally:
            real.stop()


def test_the_log_collector_takes_records_only_from_key_holders(tmp_path, keys):
    path = tmp_path / "daq.log"
    with CoreProcess(tmp_path / "runs.sqlite", ["--keys", str(keys)]) as core:
        collector = LogCollector("logs", core.endpoint, bind="tcp://127.0.0.1:0", path=path,
                                 console=None, keys=keys, forward_logs=False).start()
        forgers = [logforward.LogForwarder(collector.endpoint, "forged", keys=k)
                   for k in (None, ClientKeys.load(keys, "intruder"))]
        keyed = logforward.LogForwarder(collector.endpoint, "board", keys=ClientKeys.load(keys))
        try:
            assert collector.wait_registered(5)
            for f in forgers:
                f.emit(logging.makeLogRecord({"name": "larpixdaq.storage", "levelno": 40,
                                              "levelname": "ERROR", "msg": "forged error"}))
            keyed.emit(logging.makeLogRecord({"name": "larpixdaq.board", "levelno": 20,
                                              "levelname": "INFO", "msg": "real record"}))
            wait_for(lambda: path.exists() and "real record" in path.read_text())
            # The keyed record went in after the forged ones were sent: they never arrive.
            keyed.emit(logging.makeLogRecord({"name": "larpixdaq.board", "levelno": 20,
                                              "levelname": "INFO", "msg": "second"}))
            wait_for(lambda: "second" in path.read_text())
            lines = [json.loads(x) for x in path.read_text().splitlines()]
            assert not [x for x in lines if "forged" in json.dumps(x)]
            assert collector.received == 2
        finally:
            for f in (*forgers, keyed):
                f.close()
            collector.stop()
