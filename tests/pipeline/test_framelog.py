"""The frame log: its record codec, what a successor does with a predecessor's frames, and
the file shell (segments removed once acknowledged, torn tails, a full disk, live peers)."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.pipeline import framelog
from larpixdaq.pipeline.framelog import FrameLog, LoggedFrame, iter_records, pack_record
from larpixdaq.pipeline.protocol import KIND_DATA, KIND_INFO, FrameHeader, encode_header
from larpixdaq.runcontrol.testing import wait_for

blobs = st.binary(max_size=300)


@given(st.lists(st.tuples(blobs, blobs), max_size=20))
def test_records_read_back_as_written(records):
    data = b"".join(pack_record(h, p) + h + p for h, p in records)
    assert list(iter_records(data)) == records


@given(st.lists(st.tuples(blobs, blobs), min_size=1, max_size=10), st.data())
def test_a_record_cut_short_ends_the_reading_with_one_none(records, data):
    whole = b"".join(pack_record(h, p) + h + p for h, p in records)
    last = pack_record(*records[-1]) + records[-1][0] + records[-1][1]
    cut = data.draw(st.integers(len(whole) - len(last) + 1, len(whole) - 1))
    assert list(iter_records(whole[:cut])) == [*records[:-1], None]


def _frame(run: int, epoch: int, seq: int, offset: int = 0, words: int = 0,
           kind: str = KIND_DATA, last: bool = False) -> LoggedFrame:
    h = FrameHeader("producer-1", epoch, seq, 1, run, 1.0, kind, offset, last)
    return LoggedFrame(h, encode_header(h), b"D" + bytes(7) + bytes(16 * words))


def _plan(frames: list[LoggedFrame], run: int, words: dict[int, int]):
    """The verdicts on ``frames`` in order, and the takeover frames that follow."""
    plan = framelog.RecoveryPlan(run)
    verdicts = [plan.take(f, words.get(i, 0)) for i, f in enumerate(frames)]
    return verdicts, plan.takeover()


def test_a_successor_resends_its_run_s_frames_once_and_ends_the_streams_left_open():
    frames = [_frame(4, 100, 0, 0, 3), _frame(4, 100, 1, 3, 5), _frame(4, 100, 1, 3, 5),
              _frame(3, 90, 7, 0, 2),  # of a run that is over
              _frame(4, 101, 0, 0, 2), _frame(4, 101, 1, 2, 0, KIND_INFO, last=True)]
    words = {0: 3, 1: 5, 2: 5, 3: 2, 4: 2}
    verdicts, takeover = _plan(frames, 4, words)
    R, S, D = framelog.RESEND, framelog.STALE, framelog.REPEAT
    assert verdicts == [R, R, D, S, R, R]
    # Stream 100 never got its last frame: it gets one after seq 1, at word 3 + 5.
    assert takeover == [(100, 2, 8)]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), max_size=30))
def test_the_takeover_frame_follows_the_highest_seq_of_each_open_stream(streams):
    items = [(epoch % 3, epoch, seq) for epoch, seq in streams]  # a stream is of one run
    frames, words = [], {}
    for i, (run, epoch, seq) in enumerate(items):
        frames.append(_frame(run, epoch, seq, offset=10 * seq, words=seq % 3))
        words[i] = seq % 3
    verdicts, takeover = _plan(frames, 1, words)
    expected = {}
    for run, epoch, seq in items:  # the test's own bookkeeping
        if run == 1 and seq >= expected.get(epoch, (-1,))[0]:
            expected[epoch] = (seq, 10 * seq + seq % 3)
    assert sorted(takeover) == sorted((e, s + 1, o) for e, (s, o) in expected.items())
    keys = [(f.header.epoch, f.header.seq) for f, v in zip(frames, verdicts, strict=True)
            if v == framelog.RESEND]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(e, s) for r, e, s in items if r == 1}


def test_segments_go_once_acknowledged_and_the_newest_stays_until_reset(tmp_path):
    log = FrameLog(tmp_path, "producer-1", segment_bytes=1000)
    for seq in range(12):
        assert log.append(7, seq, b"h" * 20, b"p" * 300)
    log.flush()
    paths = log.paths
    assert len(paths) == 3  # a segment is closed once 1000 bytes are in: 4 frames of 328
    log.trim({7: 5})  # the first segment (seqs 0-3) is all acknowledged, the second not
    assert log.paths == paths[1:] and not paths[0].exists()
    log.trim({7: 11})
    assert log.paths == paths[2:]  # the newest stays: it says where the data stops
    read = framelog.read_log(tmp_path, "producer-1", alive=lambda pid: False)
    assert read.paths == []  # this process's own log is never read as a predecessor's
    log.reset()
    assert list(tmp_path.iterdir()) == []


def test_a_dead_process_s_log_is_read_a_live_one_s_is_not(tmp_path):
    log = FrameLog(tmp_path, "producer-1")
    frames = [_frame(4, 100, s, 3 * s, 3) for s in range(5)]
    for f in frames:
        log.append(100, f.header.seq, f.header_bytes, f.payload)
    (path,) = log.paths
    log.close()
    dead = tmp_path / "framelog-producer-1-999999999-1.bin"
    os.rename(path, dead)  # as a process that is gone would have left it
    with open(dead, "ab") as f:
        f.write(pack_record(b"x" * 50, b"y" * 50) + b"x" * 10)  # killed mid-write
    read = framelog.read_log(tmp_path, "producer-1", alive=lambda pid: False)
    assert read.paths == [dead]
    assert list(read.frames()) == frames and read.torn == 1
    assert framelog.read_log(tmp_path, "producer-1", alive=lambda pid: True).paths == []
    assert framelog.read_log(tmp_path, "producer-2").paths == []


def test_a_full_disk_is_counted_and_the_log_goes_on_once_there_is_room(small_disk):
    log = FrameLog(small_disk.path, "producer-1", segment_bytes=1 << 30, retry_seconds=0.2)
    assert log.append(1, 0, b"h", b"p" * 1000)
    log.flush()
    small_disk.fill()
    for seq in range(1, 50):  # the buffered writer fails on a write or on the flush
        log.append(1, seq, b"h", b"p" * 100_000)
        log.flush()
    assert log.frames_not_logged >= 1
    files = len(list(small_disk.path.glob("framelog-*")))
    assert files <= 2  # no new file per frame while the disk is full
    small_disk.free()
    wait_for(lambda: log.append(1, 61, b"h", b"p" * 1000), timeout=10)
    log.flush()
    logged = [rec for path in log.paths for rec in iter_records(path.read_bytes())
              if rec is not None]
    assert (b"h", b"p" * 1000) in logged  # what went before and after the full disk
    assert logged[0] == (b"h", b"p" * 1000)
