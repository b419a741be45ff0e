"""Storage's link and component against a real socket standing in for the aggregator:
what it rejects is counted and reaches the end-of-run record."""

from __future__ import annotations

import msgpack
import pytest
import zmq
from datagen import make_frames, make_messages

from larpixdaq.pipeline.protocol import FRAME, HELLO, encode_header
from larpixdaq.pipeline.storage import StorageComponent, StorageLink
from larpixdaq.runcontrol.messages import RunInfo
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture
def fake_aggregator():
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close(0)


def _hello_from_storage(sock) -> bytes:
    assert sock.poll(3000), "storage never said hello"
    identity, kind, body = sock.recv_multipart()
    assert kind == HELLO and "credit" in msgpack.unpackb(body)
    return identity


def test_rejected_and_foreign_frames_reach_the_end_of_run_counters(fake_aggregator, tmp_path):
    address = fake_aggregator.getsockopt_string(zmq.LAST_ENDPOINT)
    link = StorageLink(address, tmp_path, commit_interval=0.05).start()
    comp = StorageComponent("storage-t", "tcp://127.0.0.1:9", link)
    try:
        identity = _hello_from_storage(fake_aggregator)
        comp.on_prepare(RunInfo(run_number=5))
        (h, payload), = make_frames("p", 1, make_messages(3, 1, words=4), run=99,
                                    markers=False)
        fake_aggregator.send_multipart([identity, FRAME, b"\xc1 not msgpack", payload])
        fake_aggregator.send_multipart([identity, b"JUNK"])
        fake_aggregator.send_multipart([identity, FRAME, encode_header(h), payload])
        wait_for(lambda: link.counters["bad_frames"] == 2
                 and link.counters["frames_outside_run"] == 1)
        out = comp.on_end(RunInfo(run_number=5))
        assert out["counters"]["bad_frames"] == 2
        assert out["counters"]["frames_outside_run"] == 1
        assert out["counters"]["packets_written"] == 0
    finally:
        comp.stop()
        link.stop()
