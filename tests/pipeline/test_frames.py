import contextlib

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.pipeline.frames import (
    KINDS,
    FrameError,
    FrameHeader,
    SeqTracker,
    decode_frame,
    decode_header,
    encode_frame,
    encode_header,
)

headers = st.builds(
    FrameHeader,
    source=st.text(max_size=20),
    epoch=st.integers(0, 2**63 - 1),
    seq=st.integers(0, 2**63 - 1),
    io_group=st.integers(0, 255),
    run=st.integers(-1, 2**31),
    t_recv=st.floats(0, 2e9),
    kind=st.sampled_from(KINDS),
    offset=st.integers(0, 2**63 - 1),
    last=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(headers, st.binary(max_size=64))
def test_frame_round_trip(h, payload):
    parts = encode_frame(h, payload)
    back, body = decode_frame(parts)
    assert back == h
    assert bytes(body) == payload


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_garbage_header_raises_frame_error(raw):
    # Anything may happen to be a valid header; what must never escape is another error type.
    with contextlib.suppress(FrameError):
        decode_header(raw)


def _fields(**over):
    d = dict(source="a", epoch=1, seq=0, offset=0, io_group=1, run=3, t_recv=1.0,
             kind="data", last=False)
    d.update(over)
    return msgpack.packb(d)


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"source": "a"}), "lacks"),
        (_fields(seq="1"), "'seq' has a str"),
        (_fields(last=1), "'last' has a int"),
        (_fields(seq=True), "'seq' has a bool"),
        (_fields(kind="video"), "kind 'video'"),
        (_fields(io_group=300), "outside 0..255"),
        (_fields(seq=-1), "never negative"),
    ],
)
def test_bad_headers_say_what_is_wrong(raw, words):
    with pytest.raises(FrameError, match=words):
        decode_header(raw)


def test_frame_with_wrong_part_count():
    with pytest.raises(FrameError, match="has 3"):
        decode_frame([b"", b"", b""])


def test_encode_refuses_bad_header():
    with pytest.raises(FrameError):
        encode_header(FrameHeader("a", 0, 0, io_group=256))
    with pytest.raises(FrameError):
        encode_header(FrameHeader("a", 0, 0, io_group=1, kind="x"))


def _reference(last, nxt, seqs, offsets, words):
    """Frame-by-frame model of the tracker."""
    keep, dup, miss, miss_w = [], 0, 0, 0
    for s, o, w in zip(seqs, offsets, words, strict=True):
        if s <= last:
            keep.append(False)
            dup += 1
            continue
        keep.append(True)
        miss += s - last - 1
        miss_w += max(0, o - nxt)
        last, nxt = s, o + w
    return keep, dup, miss, miss_w, last, nxt


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), max_size=30),
       st.integers(-1, 10), st.integers(0, 3))
def test_tracker_matches_frame_by_frame_model(frames, last, split):
    seqs = np.array([f[0] for f in frames], dtype=np.int64)
    words = np.array([f[1] for f in frames], dtype=np.int64)
    offsets = seqs * 5  # every frame would hold 5 words if none were short
    tracker = SeqTracker(last, (last + 1) * 5)
    keep, dup, miss, miss_w = [], 0, 0, 0
    cut = min(split, len(seqs))
    for a, b in ((0, cut), (cut, len(seqs))):
        v = tracker.observe(seqs[a:b], offsets[a:b], words[a:b])
        keep += list(v.keep)
        dup += v.duplicates
        miss += v.missing_frames
        miss_w += v.missing_words
    ref = _reference(last, (last + 1) * 5, seqs, offsets, words)
    assert (keep, dup, miss, miss_w) == ref[:4]
    assert (tracker.last_seq, tracker.next_offset) == ref[4:]


def test_tracker_counts_hole_words():
    t = SeqTracker()
    v = t.observe(np.array([0, 1, 4]), np.array([0, 10, 40]), np.array([10, 10, 10]))
    assert v.keep.tolist() == [True, True, True]
    assert (v.missing_frames, v.missing_words) == (2, 20)
    v = t.observe(np.array([4, 5]), np.array([40, 50]), np.array([10, 10]))
    assert v.keep.tolist() == [False, True] and v.duplicates == 1
