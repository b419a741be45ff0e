"""A producer started where a dead one of the same name left its frame log: the frames of
the run go again ahead of its own and the dead stream is ended; frames of a run that is over
are kept on disk and told. Real sockets, a real aggregator and storage, real files."""

from __future__ import annotations

import tracemalloc

import numpy as np

from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats.pacman import (
    HEADER_BYTES,
    WORD_BYTES,
    decode_data_messages,
    encode_data_message,
)
from larpixdaq.formats.rawfile import write_raw
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline import framelog
from larpixdaq.pipeline.aggregator import Aggregator
from larpixdaq.pipeline.framelog import FrameLog
from larpixdaq.pipeline.producer import Producer
from larpixdaq.pipeline.protocol import KIND_DATA, KIND_INFO, FrameHeader, encode_header
from larpixdaq.pipeline.runfile import read_run_messages, read_run_packets
from larpixdaq.pipeline.sources.replay import ReplaySource
from larpixdaq.pipeline.storage import StorageLink
from larpixdaq.runcontrol.testing import wait_for

DEAD_PID = 999_999_999  # no such process


def _messages(seed: int, n: int, stamp: int) -> list[bytes]:
    board = SimulatedBoard(1, seed=seed).bring_up_all()
    return [encode_data_message(stamp + i, board.generate_packets(200, markers=True))
            for i in range(n)]


def _dead_log(data, run: int, epoch: int, msgs: list[bytes],
              segment_bytes: int = framelog.SEGMENT_BYTES) -> None:
    """A log as a producer named p killed in ``run`` leaves it: INFO, then data, no end."""
    log = FrameLog(data, "p", segment_bytes=segment_bytes)
    h = FrameHeader("p", epoch, 0, 1, run, 1.0, KIND_INFO, 0)
    log.append(epoch, 0, encode_header(h), b"Beginning run")
    offset = 0
    for seq, m in enumerate(msgs, start=1):
        h = FrameHeader("p", epoch, seq, 1, run, 1.0, KIND_DATA, offset)
        log.append(epoch, seq, encode_header(h), m)
        offset += _words(m)
    paths = log.paths
    log.close()
    for i, p in enumerate(paths, start=1):
        p.rename(p.with_name(f"framelog-p-{DEAD_PID}-{i}.bin"))


def _words(message: bytes) -> int:
    return (len(message) - HEADER_BYTES) // WORD_BYTES


def _rows(msgs: list[bytes]) -> np.ndarray:
    rows = decode_data_messages(msgs, 1).rows
    return rows[rows["packet_type"] != MESSAGE]


def _successor_run(tmp_path, until, prepare=None, **producer_kw) -> tuple[Producer, dict]:
    """Run 5 with a producer p started in ``tmp_path / "data"`` (where a dead one left its
    log), replaying ``mine.raw``, through a real aggregator and storage, until ``until(p)``;
    ``prepare(p)`` instead of ``p.prepare(5)`` if given. Returns p and storage's summary."""
    data = tmp_path / "data"
    agg = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None).start()
    store = StorageLink(agg.outlet, data, commit_interval=0.05).start()
    p = Producer("p", ReplaySource(tmp_path / "mine.raw", io_group=1, speed=0), agg.inlet,
                 state_dir=data, **producer_kw).start()
    try:
        store.prepare(5, {"run_type": "test"})
        (prepare or (lambda q: q.prepare(5)))(p)
        p.begin()
        wait_for(lambda: until(p), timeout=20)
        p.end()
        summary = store.end()
        # The end is answered once sent; storage's last ACK comes after its close.
        wait_for(lambda: not p.unacked, timeout=20)
        return p, summary
    finally:
        p.stop()
        store.stop()
        agg.stop()


def test_the_successor_sends_the_dead_stream_first_and_ends_it(tmp_path):
    data = tmp_path / "data"
    dead = _messages(1, 6, 1_700_000_000)
    _dead_log(data, run=5, epoch=40, msgs=dead)
    mine = _messages(2, 4, 1_700_000_100)
    write_raw(tmp_path / "mine.raw", mine, 1)
    marks = []
    p, summary = _successor_run(
        tmp_path, lambda p: p.counters.packets_sent >= sum(map(_words, mine)),
        prepare=lambda p: (marks.append(p.before_death), p.prepare(5)))
    assert marks[0] is not None and marks[0].msg_time == 1_700_000_005
    assert summary["counters"]["streams_unfinished"] == 0
    assert p.counters.frames_recovered == 7  # the dead one's INFO and six messages
    assert p.counters.packets_recovered == sum(map(_words, dead))
    assert p.counters.data_gaps == 1
    got = read_run_packets(summary["files"])
    got = got[got["packet_type"] != MESSAGE]
    assert np.array_equal(got, np.concatenate([_rows(dead), _rows(mine)]))
    texts = read_run_messages(summary["files"])
    assert texts.count("Beginning run") == 2
    assert framelog.TAKEOVER_TEXT.decode() in texts
    assert any(t.startswith("gap 1700000005-1700000100 ") for t in texts), texts
    # Once its own log holds them, the dead one's files are gone.
    assert not list(data.glob(f"framelog-p-{DEAD_PID}-*"))


def test_frames_of_a_run_that_is_over_are_kept_on_disk_and_told(tmp_path):
    data = tmp_path / "data"
    _dead_log(data, run=3, epoch=30, msgs=_messages(1, 3, 1_700_000_000))
    agg = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None).start()
    told = []
    write_raw(tmp_path / "mine.raw", _messages(2, 1, 1_700_000_100), 1)
    p = Producer("p", ReplaySource(tmp_path / "mine.raw", io_group=1, speed=0), agg.inlet,
                 state_dir=data)
    p.on_stale = lambda text, details: told.append((text, details))
    p.start()
    try:
        p.prepare(4)
    finally:
        p.stop()
        agg.stop()
    assert p.counters.frames_stale == 4 and p.counters.frames_recovered == 0
    (text, details), = told
    assert "4 frame(s) of run(s) 3 that a dead p logged" in text and details["runs"] == [3]
    kept = sorted(data.glob(f"framelog-p-{DEAD_PID}-*.stale"))
    assert kept and [str(k) for k in kept] == details["files"]
    assert framelog.read_log(data, "p").paths == []  # not read again


def test_of_a_finished_run_s_frames_only_those_storage_has_not_acknowledged_are_told(
        tmp_path):
    data = tmp_path / "data"
    _dead_log(data, run=3, epoch=30, msgs=_messages(1, 3, 1_700_000_000))  # seqs 0-3
    agg = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None).start()
    write_raw(tmp_path / "mine.raw", _messages(2, 1, 1_700_000_100), 1)
    p = Producer("p", ReplaySource(tmp_path / "mine.raw", io_group=1, speed=0), agg.inlet,
                 state_dir=data).start()
    try:
        p.call(lambda: p.acked.update({30: 2}))  # as the aggregator relays it at HELLO
        p.prepare(4)
    finally:
        p.stop()
        agg.stop()
    assert p.counters.frames_stale == 1


HOLD = 100_000
"""The hold budget of the tests of a dead log larger than it."""


def _big_dead_log(tmp_path) -> list[bytes]:
    """A dead producer's log of 40 messages of 32 kB (1.3 MB) in segments of 200 kB."""
    data = tmp_path / "data"
    board = SimulatedBoard(1, seed=3).bring_up_all()
    dead = [encode_data_message(1_700_000_000 + i, board.generate_packets(2000)[:2000])
            for i in range(40)]
    _dead_log(data, run=5, epoch=40, msgs=dead, segment_bytes=200_000)
    assert len(list(data.glob("framelog-p-*"))) >= 6
    write_raw(tmp_path / "mine.raw", _messages(2, 1, 1_700_000_100), 1)
    return dead


def test_a_dead_log_larger_than_the_hold_is_recovered_through_the_spill(tmp_path):
    """The predecessor's frames go to the backlog a segment at a time: beyond the hold
    budget they spill, so a log written during a long outage cannot exhaust memory."""
    dead = _big_dead_log(tmp_path)
    p, summary = _successor_run(tmp_path, lambda p: p.counters.frames_acked >= 42,
                                hold_bytes=HOLD, spill_dir=tmp_path / "data")
    assert p.backlog.frames_spilled > 0
    assert p.backlog.max_bytes_held <= HOLD + len(dead[0])
    got = read_run_packets(summary["files"])
    got = got[got["packet_type"] != MESSAGE]
    assert np.array_equal(got[:len(_rows(dead))], _rows(dead))
    assert summary["counters"]["streams_unfinished"] == 0


def test_recovering_a_dead_log_holds_a_segment_at_a_time_never_the_whole_log(tmp_path):
    """Measured with no aggregator to send to, so no other thread of this process (an
    aggregator's, storage's) allocates while the recovery is traced."""
    dead = _big_dead_log(tmp_path)
    data = tmp_path / "data"
    p = Producer("p", ReplaySource(tmp_path / "mine.raw", io_group=1, speed=0),
                 "tcp://127.0.0.1:9", state_dir=data, hold_bytes=HOLD, spill_dir=data).start()
    try:
        tracemalloc.start()
        try:
            p.prepare(5)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        p.stop()
    assert p.counters.frames_recovered == 41 and p.backlog.frames_spilled > 0
    # A segment and its copies at a time, never the whole log.
    assert peak < sum(map(len, dead)) * 0.6, (peak, sum(map(len, dead)))


def test_a_successor_killed_in_turn_hands_both_logs_on_and_nothing_twice(tmp_path):
    """A dies; B takes A's log into its own and dies before sending anything; C finds B's
    log (A's frames and the end of A's stream) and, had B not removed A's files, A's too:
    every frame once, the dead stream ended once."""
    data = tmp_path / "data"
    dead = _messages(1, 5, 1_700_000_000)
    _dead_log(data, run=5, epoch=40, msgs=dead)
    a_files = sorted(data.glob(f"framelog-p-{DEAD_PID}-*.bin"))
    a_copies = [f.read_bytes() for f in a_files]
    write_raw(tmp_path / "mine.raw", _messages(2, 1, 1_700_000_100), 1)
    nowhere = "tcp://127.0.0.1:9"  # B never reaches an aggregator: it sends nothing
    b = Producer("p", ReplaySource(tmp_path / "mine.raw", io_group=1, speed=0), nowhere,
                 state_dir=data).start()
    try:
        b.prepare(5)
        b_files = list(b.framelog.paths)
    finally:
        b.stop()
    assert b.counters.frames_recovered == 6 and not any(f.exists() for f in a_files)
    for i, f in enumerate(b_files, start=1):  # as a process that is gone leaves them
        f.rename(f.with_name(f"framelog-p-{DEAD_PID - 1}-{i}.bin"))
    for f, raw in zip(a_files, a_copies, strict=True):  # B died before removing A's files
        f.write_bytes(raw)
    c, summary = _successor_run(tmp_path, lambda p: p.counters.packets_sent > 0)
    assert c.counters.frames_recovered == 7  # A's six and B's end of A's stream, once each
    assert summary["counters"]["streams_unfinished"] == 0
    assert summary["counters"].get("frames_conflicting", 0) == 0
    got = read_run_packets(summary["files"])
    got = got[got["packet_type"] != MESSAGE]
    assert np.array_equal(got[:len(_rows(dead))], _rows(dead))
    assert read_run_messages(summary["files"]).count(framelog.TAKEOVER_TEXT.decode()) == 1
    assert not list(data.glob("framelog-p-*.bin"))  # C's own log is gone too: all committed
