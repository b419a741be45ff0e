"""The monitor component against a real core and a real PUB feed shaped like the aggregator's."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
import zmq

from larpixdaq.formats.packets import encode_packets
from larpixdaq.formats.pacman import data_words, encode_data_message
from larpixdaq.pipeline.monitor import SNAPSHOT, MonitorComponent
from larpixdaq.pipeline.protocol import FRAME, STATS, FrameHeader, encode_header
from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


def message(n: int, chip: int = 11) -> bytes:
    packets = encode_packets(packet_type=0, chip_id=chip, channel_id=np.arange(n) % 64,
                             dataword=7)
    return encode_data_message(1_700_000_000, data_words(1, packets))


@pytest.fixture
def setup(tmp_path):
    ctx = zmq.Context.instance()
    core = CoreProcess(tmp_path / "runs.sqlite").start()
    feed = ctx.socket(zmq.PUB)
    feed.setsockopt(zmq.LINGER, 0)
    feed.bind("tcp://127.0.0.1:*")
    address = feed.getsockopt_string(zmq.LAST_ENDPOINT)
    mon = MonitorComponent("monitor", core.endpoint, source=address, interval=0.2,
                           heartbeat_interval=0.05, core_timeout=0.5).start()
    op = Operator(core.endpoint, timeout=10)
    try:
        assert mon.wait_registered(5)
        yield core, feed, mon, op
    finally:
        op.close()
        mon.stop()
        feed.close(0)
        core.terminate()


def snapshot(op: Operator) -> dict:
    final = op.call("invoke", {"component": "monitor", "action": "snapshot", "params": {}})
    assert final.success, final.message
    return final.data["result"]


def connect(feed: zmq.Socket, op: Operator) -> None:
    """Publish stats until the monitor has them: the subscription is then in place."""
    def seen() -> bool:
        feed.send_multipart([STATS, msgpack.packb({"counters": {"frames_in": 1}})])
        return snapshot(op)["aggregator"].get("frames_in") == 1
    wait_for(seen, timeout=10, interval=0.05)


def send(feed: zmq.Socket, seq: int, offset: int, payload: bytes, run: int) -> None:
    h = FrameHeader("producer-1", 1, seq, 1, run, 1.0, "data", offset)
    feed.send_multipart([FRAME, encode_header(h), payload])


def test_monitor_counts_what_it_is_sent_and_resets_on_prepare(setup):
    core, feed, mon, op = setup
    assert op.call("prepare_run", {"comment": "monitor test"}).success
    run = snapshot(op)["run_number"]
    connect(feed, op)
    send(feed, 0, 0, message(20), run)
    send(feed, 3, 60, message(20), run)  # frames 1 and 2 (40 words) were not sampled
    feed.send_multipart([FRAME, b"\xc1not msgpack", b""])
    feed.send_multipart([b"garbage"])
    feed.send_multipart([STATS, b"\xc1not msgpack"])
    snap = wait_for(lambda: (s := snapshot(op))["counters"]["packets_seen"] == 40
                    and s["counters"]["bad_frames"] == 3 and s, timeout=10)
    assert snap["fraction_seen"]["frames"] == 0.5
    assert snap["fraction_seen"]["words"] == 0.5
    assert snap["decode_errors"] == {"bad_header": 1, "bad_parts": 1, "bad_stats": 1}
    assert snap["adc"][7] == 40
    assert snap["monitor"] == "monitor"
    counters = wait_for(lambda: next(c for c in op.call("clients").data["components"]
                                     if c["name"] == "monitor")["counters"] or None)
    assert "fraction_seen" in counters
    # The end clears the display (the counts are in the run record), and frames of the
    # ended run still in flight are not counted.
    assert op.call("end_run").success
    snap = snapshot(op)
    assert snap["ended_run"] == run and snap["run_number"] is None
    assert snap["counters"]["packets_seen"] == 0 and sum(snap["adc"]) == 0
    record = op.call("run", {"run_number": run}).data["run"]
    assert record["counters"]["monitor"]["packets_seen"] == 40
    send(feed, 4, 80, message(20), run)
    wait_for(lambda: snapshot(op)["counters"]["frames_other_run"] == 1, timeout=10)
    assert snapshot(op)["counters"]["packets_seen"] == 0
    # A new run starts from zero.
    assert op.call("prepare_run", {"comment": "again"}).success
    snap = snapshot(op)
    assert snap["run_number"] == run + 1
    assert snap["counters"]["packets_seen"] == 0 and sum(snap["adc"]) == 0
    assert op.call("end_run").success


def test_snapshots_are_published(setup):
    core, feed, mon, op = setup
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(mon.publish_address)
    try:
        assert sub.poll(5000), "no snapshot published"
        kind, body = sub.recv_multipart()
        assert kind == SNAPSHOT
        snap = json.loads(body)
        assert snap["monitor"] == "monitor" and len(snap["adc"]) == 256
    finally:
        sub.close(0)
    services = op.call("status").data["components"]
    mine = next(c for c in services if c["name"] == "monitor")
    assert mine["endpoints"]["monitor_snapshots"] == mon.publish_address
    assert op.call("invoke", {"component": "monitor", "action": "clear", "params": {}}).success


def test_decode_errors_reach_the_counters():
    comp = MonitorComponent("mon-t", "tcp://127.0.0.1:9", publish=None)
    try:
        msg = encode_data_message(1, data_words(1, encode_packets(packet_type=0, chip_id=[11, 12])))
        h = FrameHeader("p", 1, 0, 1, -1, 1.0, "data", 0)
        comp.monitor.add([h], [msg[:-3]], 1.0)
        comp.monitor.add_bad("bad_header")
        c = comp.counters()
        assert c["decode_errors_truncated_word"] == 1 and c["decode_errors_bad_header"] == 1
        assert c["decode_errors"] >= 2
    finally:
        comp.stop()
