"""Frame files read back for people: recognised by content, summarised against what was
written into them (by the frame log's and the backlog's own writers), torn tails and damage
told with their offsets, in bounded memory."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
from datagen import make_frames, make_messages
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.pipeline.backlog import Backlog, Pending
from larpixdaq.pipeline.framefiles import (
    FRAME_LOG,
    SPILL_FILE,
    Damage,
    Record,
    SeqRanges,
    read_records,
    sniff,
    summarise_file,
)
from larpixdaq.pipeline.framelog import FrameLog
from larpixdaq.pipeline.protocol import encode_header

STAMP = 1_700_000_000  # make_messages stamps message i with STAMP + i


def _write_log(directory: Path, frames: list, segment_bytes: int = 64 << 20) -> list[Path]:
    """The frames through the producer's own frame log; its segments, oldest first."""
    log = FrameLog(directory, "producer-1", segment_bytes=segment_bytes)
    for h, payload in frames:
        assert log.append(h.epoch, h.seq, encode_header(h), payload)
    paths = log.paths
    log.close()
    return paths


def _record_size(frame) -> int:
    return 8 + len(encode_header(frame[0])) + len(frame[1])


def _two_runs() -> tuple[list, list[bytes], list[bytes]]:
    """Stream 3 of run 7 (seqs 10, 11 and 20 never logged, seq 5 logged twice, its last frame
    not yet) and stream 4
    of run 8 (ended), as a producer would log them."""
    a, b = make_messages(1, 30, words=40), make_messages(2, 12, words=25)
    first = [f for f in make_frames("producer-1", 1, a, run=7, epoch=3, markers=True)
             if f[0].seq not in (10, 11, 20) and not f[0].last]
    first.insert(6, first[5])
    second = make_frames("producer-1", 1, b, run=8, epoch=4)
    return first + second, a, b


def test_a_frame_log_s_summary_says_what_was_logged(tmp_path):
    frames, a, b = _two_runs()
    (path,) = _write_log(tmp_path, frames)
    s = summarise_file(path)
    assert s["format"] == FRAME_LOG and s["size_bytes"] == path.stat().st_size
    assert s["records"] == len(frames) and s["runs"] == [7, 8]
    assert s["torn_tail"] is None and s["damaged"]["count"] == 0
    assert s["frames_by_kind"] == dict(Counter(h.kind for h, _ in frames))
    by_stream = {(st_["source"], st_["epoch"]): st_ for st_ in s["streams"]}
    assert list(by_stream) == [("producer-1", 3), ("producer-1", 4)]
    one, two = by_stream[("producer-1", 3)], by_stream[("producer-1", 4)]
    # Stream 3: seq 0 (INFO) and 1..30 (data) minus 10, 11, 20; 5 twice; no end.
    assert (one["seq_first"], one["seq_last"]) == (0, 30)
    assert one["holes"] == [[10, 11], [20, 20]] and one["missing_frames"] == 3
    assert one["repeated_frames"] == 1 and one["frames"] == 29
    assert one["frames_by_kind"] == {"data": 28, "info": 1}
    logged = [m for i, m in enumerate(a) if i + 1 not in (10, 11, 20)]
    assert one["data_words"] == 40 * (len(logged) + 1)  # seq 5 counted each time logged
    assert one["message_time"] == {"first": STAMP, "last": STAMP + 29}
    assert one["runs"] == [7] and one["io_groups"] == [1] and not one["stream_ended"]
    assert one["t_recv"] == {"first": 1.0, "last": 2.0}
    assert (two["seq_first"], two["seq_last"], two["hole_count"]) == (0, 13, 0)
    assert two["data_words"] == 25 * len(b) and two["stream_ended"]
    assert two["message_time"] == {"first": STAMP, "last": STAMP + 11}
    assert s["data_words"] == one["data_words"] + two["data_words"]


def test_files_are_recognised_by_content_and_the_name_says_which(tmp_path, golden_dir):
    frames, _, _ = _two_runs()
    (log,) = _write_log(tmp_path / "d", frames)
    renamed = log.rename(tmp_path / "kept-for-later.dat")
    assert sniff(renamed) == FRAME_LOG
    stale = tmp_path / "framelog-producer-1-77-2.stale"
    renamed.rename(stale)
    assert sniff(stale) == FRAME_LOG
    # A spill file, as the backlog writes it: over the memory budget, frames go to disk.
    backlog = Backlog(0, tmp_path / "spill", "producer-1")
    for h, payload in frames[:5]:
        backlog.push(Pending(h.epoch, h.seq, encode_header(h), payload))
    backlog.close()
    assert backlog.frames_spilled == 4 and backlog.spill_path.exists()
    assert sniff(backlog.spill_path) == SPILL_FILE
    s = summarise_file(backlog.spill_path)
    assert s["format"] == SPILL_FILE and s["records"] == 4
    assert s["streams"][0]["seq_first"] == 1 and s["streams"][0]["seq_last"] == 4
    # Neither HDF5 nor text nor an empty file of another name is taken for one.
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is no frame log at all")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    for other in (golden_dir / "reference-v2.4.h5", golden_dir / "raw-messages.h5", text,
                  empty):
        assert sniff(other) is None, other
    # An empty or wholly garbled file under a frame log's name is still one (and says so).
    named = tmp_path / "framelog-producer-1-12-1.bin"
    named.write_bytes(b"")
    assert sniff(named) == FRAME_LOG and summarise_file(named)["records"] == 0


def test_a_torn_tail_is_told_at_the_offset_of_the_record_it_cut(tmp_path):
    frames, _, _ = _two_runs()
    (path,) = _write_log(tmp_path, frames)
    whole = path.read_bytes()
    last = _record_size(frames[-1])
    for cut in (3, 8, 8 + 20, last - 1):  # in the lengths, the header, the payload
        path.write_bytes(whole[:len(whole) - last + cut])
        s = summarise_file(path)
        assert s["records"] == len(frames) - 1
        assert s["torn_tail"]["offset"] == len(whole) - last
        assert s["torn_tail"]["bytes"] == cut
        assert s["damaged"]["count"] == 0


def test_damage_is_counted_and_named_by_offset_and_reading_goes_on(tmp_path):
    frames, _, _ = _two_runs()
    (path,) = _write_log(tmp_path, frames)
    data = bytearray(path.read_bytes())
    sizes = [_record_size(f) for f in frames]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    # Record 7's header made unreadable (its lengths still right); 1000 random bytes put
    # in front of record 20; record 30's lengths overwritten with nonsense.
    data[offsets[7] + 8:offsets[7] + 12] = b"\xc1\xc1\xc1\xc1"
    junk = np.random.default_rng(5).bytes(1000)
    data[offsets[20]:offsets[20]] = junk
    at30 = offsets[30] + len(junk)
    data[at30:at30 + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    s = summarise_file(path)
    places = s["damaged"]["places"]
    assert s["damaged"]["count"] == 3
    assert [p["offset"] for p in places] == [offsets[7], offsets[20], at30]
    assert [p["bytes"] for p in places] == [sizes[7], len(junk), sizes[30]]
    assert "not msgpack" in places[0]["reason"] and "header length" in places[2]["reason"]
    assert s["records"] == len(frames) - 2 and s["torn_tail"] is None
    got = [(r.header.epoch, r.header.seq) for r in read_records(path) if isinstance(r, Record)]
    want = [(h.epoch, h.seq) for i, (h, _) in enumerate(frames) if i not in (7, 30)]
    assert got == want
    # A file of nothing but garbage under a frame log's name: one damaged place, no frame.
    noise = tmp_path / "framelog-producer-1-9-1.bin"
    noise.write_bytes(np.random.default_rng(6).bytes(3 << 20))
    s = summarise_file(noise)
    assert s["records"] == 0 and s["damaged"]["count"] == 1
    assert s["damaged"]["bytes"] == 3 << 20


def test_a_file_larger_than_the_memory_budget_is_read_a_record_at_a_time(tmp_path):
    budget = 4 << 20
    msgs = make_messages(3, 1500, words=1000)  # 16 kB each: a 24 MB log
    frames = make_frames("producer-1", 2, msgs, run=9, epoch=1)
    (path,) = _write_log(tmp_path, frames)
    assert path.stat().st_size > 5 * budget
    tracemalloc.start()
    try:
        s = summarise_file(path)
        n_payload = sum(len(r.payload) for r in read_records(path) if isinstance(r, Record))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < budget, peak
    assert s["records"] == 1502 and s["data_words"] == 1500 * 1000
    assert n_payload == sum(len(p) for _, p in frames)


# -- the pure parts ----------------------------------------------------------------------


@given(st.lists(st.integers(0, 60), max_size=80))
def test_seq_ranges_hold_exactly_the_seqs_added(seqs):
    r = SeqRanges()
    seen: set[int] = set()
    for q in seqs:
        assert r.add(q) == (q not in seen)
        seen.add(q)
    assert r.count == len(seen)
    covered = {q for lo, hi in r.ranges() for q in range(lo, hi + 1)}
    assert covered == seen
    assert all(hi + 1 < lo for (_, hi), (lo, _) in zip(r.ranges(), r.ranges()[1:],
                                                        strict=False))  # disjoint, apart
    if seen:
        missing = set(range(min(seen), max(seen) + 1)) - seen
        assert {q for lo, hi in r.holes() for q in range(lo, hi + 1)} == missing
        assert (r.first, r.last) == (min(seen), max(seen))
    else:
        assert r.holes() == [] and r.first is None


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9)), min_size=1, max_size=40))
def test_the_summary_of_any_frames_counts_each_stream_apart(keys):
    from larpixdaq.pipeline.framefiles import FrameSummary
    from larpixdaq.pipeline.protocol import FrameHeader

    s = FrameSummary()
    for epoch, seq in keys:
        s.add_frame(FrameHeader("p", epoch, seq, 1, epoch + 1, 1.0, "data"), 8 + 16 * seq,
                    STAMP + seq)
    s.add_damage(Damage(5, 7, "x"))
    out = s.result()
    assert out["records"] == len(keys) and out["damaged"]["count"] == 1
    for stream in out["streams"]:
        mine = [q for e, q in keys if e == stream["epoch"]]
        assert stream["frames"] == len(mine)
        assert stream["repeated_frames"] == len(mine) - len(set(mine))
        assert stream["data_words"] == sum(mine)
        assert stream["missing_frames"] == max(mine) - min(mine) + 1 - len(set(mine))
        assert stream["message_time"] == {"first": STAMP + min(mine), "last": STAMP + max(mine)}
        assert stream["runs"] == [stream["epoch"] + 1]
