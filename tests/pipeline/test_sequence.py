"""SeqTracker: the vectorised per-stream bookkeeping agrees with a frame-by-frame model."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.pipeline.sequence import SeenFrames, SeqTracker, frame_digest


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


def test_seen_frames_tells_a_duplicate_from_a_conflict():
    seen = SeenFrames(memory=3)
    a = frame_digest("data", 1, 0, False, b"payload")
    assert a == frame_digest("data", 1, 0, False, bytearray(b"payload"))
    seen.remember(0, a)
    assert seen.judge(0, a) is True
    assert seen.judge(0, frame_digest("data", 1, 0, False, b"payloaD")) is False
    # Header fields that say what a frame holds count too.
    assert seen.judge(0, frame_digest("data", 2, 0, False, b"payload")) is False
    assert seen.judge(0, frame_digest("data", 1, 5, False, b"payload")) is False
    assert seen.judge(0, frame_digest("info", 1, 0, True, b"payload")) is False
    assert seen.judge(1, a) is None  # never written
    for seq in (1, 2, 3):
        seen.remember(seq, a)
    assert seen.judge(0, a) is None  # the oldest is forgotten: bounded memory
