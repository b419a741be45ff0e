"""Misbehaving peers on the data path, against real processes: forged frames (a source,
io_group, epoch or run the run does not know, another stream's seq) are refused, counted and
never written, and the run is not `success`; a second "storage" saying HELLO gets nothing."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq
from daq_procs import Daq
from datagen import make_messages

from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.protocol import (
    CREDIT,
    Frame,
    FrameHeader,
    ProducerHello,
    StorageHello,
    parse_monitor_message,
)
from larpixdaq.pipeline.runfile import read_run_packets
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture
def daq(tmp_path):
    d = Daq(tmp_path, boards=1, rate=50_000)
    socks: list[zmq.Socket] = []

    def sock(kind: int, address: str) -> zmq.Socket:
        s = zmq.Context.instance().socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(address)
        socks.append(s)
        return s

    d.sock = sock
    try:
        yield d.start()
    finally:
        for s in socks:
            s.close(0)
        d.close()


def _counter(daq: Daq, role: str, name: str) -> int:
    return sum(c.get("counters", {}).get(name, 0) for c in daq.clients() if c["role"] == role)


def _a_real_header(daq: Daq) -> FrameHeader:
    """The header of a frame the real producer sent, off the monitor feed (what anyone who
    can reach it sees when no keys are configured)."""
    monitor = [w for w in daq.procs[0].first_line.replace(",", " ").split() if "://" in w][2]
    sub = daq.sock(zmq.SUB, monitor)
    sub.setsockopt(zmq.SUBSCRIBE, b"")

    def data_header():
        if not sub.poll(100):
            return None
        msg = parse_monitor_message(sub.recv_multipart())
        return msg.header if isinstance(msg, Frame) and msg.header.kind == "data" else None
    return wait_for(data_header)


def test_forged_frames_are_refused_counted_never_written(daq):
    # A process that says HELLO on the storage port before the run, with credit to spare.
    thief = daq.sock(zmq.DEALER, daq.outlet)
    thief.send_multipart(StorageHello((), 1 << 30).parts())
    daq.call("prepare_run")
    daq.call("begin_run")
    run_number = daq.op.call("status").data["run"]["run_number"]
    real = _a_real_header(daq)
    forger = daq.sock(zmq.DEALER, daq.inlet)
    forger.send_multipart(ProducerHello("forger", 7).parts())
    thief.send_multipart(StorageHello((), 1 << 30).parts())  # and again, during the run
    payload = make_messages(3, 1, words=100)[0]
    n = 20
    wrong = {
        "unknown source": lambda i: FrameHeader("forger", real.epoch, i, 7, run_number),
        "unknown io_group": lambda i: FrameHeader(real.source, real.epoch, 10**6 + i, 7,
                                                  run_number),
        "unknown epoch": lambda i: FrameHeader(real.source, real.epoch ^ (1 << 40), i,
                                               real.io_group, run_number),
        "another run": lambda i: FrameHeader(real.source, real.epoch, 10**6 + i,
                                             real.io_group, run_number + 1),
        # The real stream, a seq 50 ahead of where it was: from another connection.
        "forged seq": lambda i: FrameHeader(real.source, real.epoch, real.seq + 50 + i,
                                            real.io_group, run_number),
    }
    for make in wrong.values():
        for i in range(n):
            forger.send_multipart(Frame(make(i), payload).parts())
    wait_for(lambda: _counter(daq, "aggregator", "frames_not_admitted") == n * len(wrong))
    written = _counter(daq, "storage", "packets_written")
    wait_for(lambda: _counter(daq, "storage", "packets_written") > written)  # still going
    final = daq.op.end_run().wait()
    assert final.success, final.message

    run = daq.runs_json()[0]
    assert run["exit_status"] == "degraded"
    assert "aggregator.run_frames_not_admitted" in final.message
    assert run["counters"]["aggregator"]["run_frames_not_admitted"] == n * len(wrong)
    assert run["counters"]["aggregator"]["storage_hellos_refused"] >= 2
    storage = run["counters"]["storage"]
    assert storage["packets_lost"] == 0 and storage["frames_missing"] == 0
    assert storage["frames_duplicate"] == 0 and storage["frames_conflicting"] == 0
    # The file holds exactly what the real board sent: nothing forged, nothing dropped.
    rows = read_run_packets(run["files"])
    chips = rows[rows["packet_type"] != MESSAGE]
    assert set(np.unique(chips["io_group"]).tolist()) == {1}
    assert np.array_equal(chips, daq.sent_rows(1, run_number))
    assert run["packets_written"] == len(rows)
    # The run's table: the one producer, its io_group and its epoch block.
    (source,) = run["admitted"]
    assert source == real.source and run["admitted"][source][0] == 1
    # The process that said HELLO on the storage port never got a frame.
    assert not thief.poll(0)


def test_a_producer_hello_for_a_source_not_admitted_gets_no_credit(daq):
    daq.call("prepare_run")
    late = daq.sock(zmq.DEALER, daq.inlet)
    late.send_multipart(ProducerHello("late", 9).parts())
    wait_for(lambda: _counter(daq, "aggregator", "producers") == 2)
    # Admitted sources only while a run's table is set: a WELCOME, never any credit.
    deadline = time.monotonic() + 0.5
    while (left := deadline - time.monotonic()) > 0 and late.poll(left * 1000):
        assert late.recv_multipart()[0] != CREDIT
    daq.call("begin_run")
    final = daq.op.end_run().wait()
    assert final.success, final.message
