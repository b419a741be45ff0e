"""Sequence bookkeeping of frame streams: which frames are new, duplicated or missing.

Every frame carries its stream's ``seq`` (0, 1, 2, ... with no holes) and word ``offset``
(see :class:`~larpixdaq.pipeline.protocol.FrameHeader`). :class:`SeqTracker` is the pure
per-stream state storage uses to drop duplicates (retransmissions after a restart) and
count holes, vectorised over a batch of frames; :class:`SeenFrames` tells a duplicate (the
same bytes again) from a conflict (other bytes under a seq already written).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class SeqVerdict:
    """What :meth:`SeqTracker.observe` decided about a batch of one stream's frames."""

    keep: np.ndarray  # bool per frame: new, write it
    duplicates: int  # frames at or below the highest seq already seen
    missing_frames: int  # holes in seq before kept frames
    missing_words: int  # words those holes held (from the offsets)


class SeqTracker:
    """Per-stream sequence state: the highest seq seen and the words expected next.

    Frames of one stream travel in order; a frame at or below the highest seq already seen
    is a duplicate (a retransmission after a restart), a jump is a hole. Starting state can
    be given (a restarted storage resumes from what it committed).
    """

    def __init__(self, last_seq: int = -1, next_offset: int = 0) -> None:
        self.last_seq = int(last_seq)
        self.next_offset = int(next_offset)

    def observe(self, seqs: np.ndarray, offsets: np.ndarray, words: np.ndarray) -> SeqVerdict:
        """Decide about a batch: ``seqs``, ``offsets`` and ``words`` (payload words) per frame."""
        seqs = np.asarray(seqs, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        words = np.asarray(words, dtype=np.int64)
        if len(seqs) == 0:
            return SeqVerdict(np.zeros(0, bool), 0, 0, 0)
        running = np.maximum.accumulate(np.concatenate(([self.last_seq], seqs)))
        before = running[:-1]
        keep = seqs > before
        kept_seq = seqs[keep]
        kept_before = before[keep]
        missing_frames = int(np.sum(kept_seq - kept_before - 1))
        # Words expected before each kept frame: the end of the previous kept frame.
        kept_off = offsets[keep]
        kept_end = kept_off + words[keep]
        expected = np.concatenate(([self.next_offset], kept_end[:-1]))
        missing_words = int(np.sum(np.clip(kept_off - expected, 0, None)))
        if len(kept_seq):
            self.last_seq = int(kept_seq[-1])
            self.next_offset = int(kept_end[-1])
        return SeqVerdict(keep, int(len(seqs) - len(kept_seq)), missing_frames, missing_words)


HASH_MEMORY = 4096
"""Frames per stream whose digest storage keeps: more than a producer or the aggregator
sends again after a restart (what was not yet acknowledged)."""


def frame_digest(kind: str, io_group: int, offset: int, last: bool, payload: bytes) -> bytes:
    """What makes two frames with the same (source, epoch, seq) the same frame: the payload
    and the header fields that say what it holds (``t_recv`` is the producer's, the same in
    a frame sent again)."""
    h = hashlib.blake2b(payload, digest_size=16)
    h.update(f"|{kind}|{io_group}|{offset}|{int(last)}".encode())
    return h.digest()


class SeenFrames:
    """Digests of one stream's most recent frames, so a frame at a seq already written can be
    told apart: the same bytes again (a duplicate, dropped) or other bytes under the same
    seq (a *conflict*: a forged or corrupt frame, refused and counted; the written one is
    kept). Bounded to ``memory`` frames: a seq older than that is judged a duplicate
    unverified (:meth:`judge` gives None)."""

    def __init__(self, memory: int = HASH_MEMORY) -> None:
        self.memory = int(memory)
        self._digests: dict[int, bytes] = {}

    def remember(self, seq: int, digest: bytes) -> None:
        self._digests[seq] = digest
        if len(self._digests) > self.memory:
            del self._digests[next(iter(self._digests))]  # the oldest (insertion order)

    def judge(self, seq: int, digest: bytes) -> bool | None:
        """True: the frame written at ``seq`` had these bytes; False: other bytes (a
        conflict); None: not remembered."""
        known = self._digests.get(seq)
        return None if known is None else known == digest
