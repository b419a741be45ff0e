"""Storage's link and component against a real socket standing in for the aggregator:
what it rejects is counted and reaches the end-of-run record."""

from __future__ import annotations

import contextlib

import msgpack
import numpy as np
import pytest
import zmq
from datagen import expected_rows, make_frames, make_messages

from larpixdaq.pipeline.protocol import ACK, FRAME, HELLO, encode_header
from larpixdaq.pipeline.runfile import read_run_packets
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


@contextlib.contextmanager
def storage_in_run_5(fake_aggregator, data_dir, **link_options):
    """A storage link and component on ``data_dir``, heard by the fake aggregator, in run 5:
    yields ``(link, component, the link's identity at the aggregator)``."""
    address = fake_aggregator.getsockopt_string(zmq.LAST_ENDPOINT)
    link = StorageLink(address, data_dir, commit_interval=0.05, **link_options).start()
    comp = StorageComponent("storage-t", "tcp://127.0.0.1:9", link)
    try:
        identity = _hello_from_storage(fake_aggregator)
        comp.on_prepare(RunInfo(run_number=5))
        yield link, comp, identity
    finally:
        comp.stop()
        link.stop()


def test_rejected_and_foreign_frames_reach_the_end_of_run_counters(fake_aggregator, tmp_path):
    with storage_in_run_5(fake_aggregator, tmp_path) as (link, comp, identity):
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


def _acked(sock, timeout: float) -> dict:
    """The highest seq per stream in every ACK storage sends within ``timeout`` seconds."""
    out: dict = {}
    while sock.poll(timeout * 1000):
        _, kind, *rest = sock.recv_multipart()
        if kind == ACK:
            for source, epoch, seq in msgpack.unpackb(rest[0])["streams"]:
                out[(source, epoch)] = max(seq, out.get((source, epoch), -1))
        timeout = 0.3
    return out


def test_after_a_write_error_nothing_more_is_acknowledged_until_the_run_is_given_up(
        fake_aggregator, small_disk):
    alarms: list[str] = []
    with storage_in_run_5(fake_aggregator, small_disk.path / "data",
                          reserve_bytes=1 << 20) as (link, comp, identity):
        link.on_alarm = alarms.append
        msgs = make_messages(4, 40, words=100)
        frames = make_frames("p", 1, msgs, run=5, markers=False)
        first_rows = expected_rows(msgs[:10], 1)

        def send(batch):
            for h, payload in batch:
                fake_aggregator.send_multipart([identity, FRAME, encode_header(h), payload])

        send(frames[:10])
        assert _acked(fake_aggregator, 5.0) == {("p", 7): 9}  # committed, acknowledged
        small_disk.fill()
        send(frames[10:])
        wait_for(lambda: alarms and link.counters["frames_refused"] == 30)
        assert "no space left on device" in alarms[0]
        # Refused frames are never acknowledged while the run is open: the aggregator keeps
        # them (and, its window full, stops the producers).
        assert _acked(fake_aggregator, 1.0).get(("p", 7), -1) < 10
        on_disk = read_run_packets([small_disk.path / "data" / "run-000005.h5"])
        assert np.array_equal(on_disk, first_rows)
        # Run control gave up on the run (ERROR): the refused frames are let go, still
        # counted as refused and not as written.
        comp.on_error("the core entered ERROR")
        assert _acked(fake_aggregator, 5.0) == {("p", 7): 39}
        out = comp.on_end(RunInfo(run_number=5))
        c = out["counters"]
        assert c["run_frames_refused"] == 30 and c["run_write_errors"] == 1
        assert c["packets_written"] == len(first_rows)


def test_nothing_is_acknowledged_before_the_disk_has_it(fake_aggregator, tmp_path,
                                                          monkeypatch):
    """A disk that takes its time (its sync of the part held back here): storage
    acknowledges none of the frames until the part's rows are on the disk and the journal
    line that claims them is written."""
    import os
    import threading

    from larpixdaq.pipeline.runjournal import read_journal

    real, release, held = os.fsync, threading.Event(), threading.Event()

    def slow_disk(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".h5"):
            held.set()
            release.wait(60)
        real(fd)

    monkeypatch.setattr(os, "fsync", slow_disk)
    with storage_in_run_5(fake_aggregator, tmp_path) as (_, comp, identity), \
            contextlib.ExitStack() as stack:
        stack.callback(release.set)  # never leave storage's sync thread waiting
        msgs = make_messages(6, 20, words=100)
        frames = make_frames("p", 1, msgs, run=5, markers=False)
        for h, payload in frames:
            fake_aggregator.send_multipart([identity, FRAME, encode_header(h), payload])
        assert held.wait(30), "storage never synced its part"
        assert _acked(fake_aggregator, 1.5).get(("p", 7), -1) == -1
        assert [r for r in read_journal(tmp_path / "run-000005.journal") if "part" in r
                and r["streams"]] == []
        release.set()
        assert _acked(fake_aggregator, 10.0) == {("p", 7): 19}
        lines = [r for r in read_journal(tmp_path / "run-000005.journal") if "part" in r]
        assert lines[-1]["streams"]["p\x007"][0] == 19
        out = comp.on_end(RunInfo(run_number=5))
        assert out["counters"]["packets_written"] == len(expected_rows(msgs, 1))
