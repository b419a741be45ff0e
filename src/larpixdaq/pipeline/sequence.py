"""Sequence bookkeeping of frame streams: which frames are new, duplicated or missing.

Every frame carries its stream's ``seq`` (0, 1, 2, ... with no holes) and word ``offset``
(see :class:`~larpixdaq.pipeline.protocol.FrameHeader`). :class:`SeqTracker` is the pure
per-stream state storage uses to drop duplicates (retransmissions after a restart) and
count holes, vectorised over a batch of frames.
"""

from __future__ import annotations

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
