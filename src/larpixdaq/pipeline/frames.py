"""Data frames: how PACMAN messages travel between producer, aggregator, storage and monitor.

A frame is a ZeroMQ multipart message of two parts: a small msgpack header and the payload.
For a ``data`` frame the payload is one PACMAN message, byte for byte as the board sent it;
for an ``info`` frame it is UTF-8 text (the run markers "Beginning run"/"Ending run") and for
a ``configs`` frame it is rows of the ``configs`` table (CONFIGS_DTYPE bytes).

The header says where the payload comes from and where it sits in its stream:

========== =========================================================================
source     name of the producer (one per board)
epoch      one stream of one producer in one run; a producer starts a new epoch at
           every prepare (and after a restart), so (source, epoch) names a stream
seq        position of the frame in its stream: 0, 1, 2, ... with no holes
offset     PACMAN words this stream sent before this frame, so a hole in ``seq`` also
           says how many packets it swallowed
io_group   the board's io_group (not inside PACMAN messages)
run        the run number the frame belongs to (-1 outside a run)
t_recv     UNIX time the producer received the payload
kind       ``data`` | ``info`` | ``configs``
last       True on a stream's final frame (the "Ending run" marker)
========== =========================================================================

Nothing here touches a socket. :class:`SeqTracker` is the pure bookkeeping of per-stream
sequence numbers that storage uses to drop duplicates and count holes, vectorised over a
batch of frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
import numpy as np

from larpixdaq.errors import FormatError

KINDS = ("data", "info", "configs")
KIND_DATA, KIND_INFO, KIND_CONFIGS = KINDS

_FIELDS: dict[str, tuple[type, ...]] = {
    "source": (str,),
    "epoch": (int,),
    "seq": (int,),
    "offset": (int,),
    "io_group": (int,),
    "run": (int,),
    "t_recv": (int, float),
    "kind": (str,),
    "last": (bool,),
}


class FrameError(FormatError):
    """Bytes that are not a valid data frame; the message says which part is wrong."""


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The header of one frame (see the module docstring for the fields)."""

    source: str
    epoch: int
    seq: int
    io_group: int
    run: int = -1
    t_recv: float = 0.0
    kind: str = KIND_DATA
    offset: int = 0
    last: bool = False

    @property
    def stream(self) -> tuple[str, int]:
        return (self.source, self.epoch)


def encode_header(h: FrameHeader) -> bytes:
    """The msgpack bytes of a header; checks what a receiver would reject."""
    if h.kind not in KINDS:
        raise FrameError(f"frame kind must be one of {', '.join(KINDS)}, not {h.kind!r}")
    if not 0 <= h.io_group <= 255:
        raise FrameError(f"io_group {h.io_group} is outside 0..255")
    if h.seq < 0 or h.offset < 0 or h.epoch < 0:
        raise FrameError("seq, offset and epoch are never negative")
    return msgpack.packb(
        {"source": h.source, "epoch": h.epoch, "seq": h.seq, "offset": h.offset,
         "io_group": h.io_group, "run": h.run, "t_recv": h.t_recv, "kind": h.kind,
         "last": h.last}
    )


def encode_frame(h: FrameHeader, payload: bytes | memoryview) -> list[bytes | memoryview]:
    """The two parts to send with ``send_multipart``; the payload is not copied."""
    return [encode_header(h), payload]


def decode_header(raw: bytes | memoryview) -> FrameHeader:
    """Parse and check a header; :class:`FrameError` names the first thing wrong."""
    try:
        d = msgpack.unpackb(bytes(raw), raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise FrameError(f"frame header is not msgpack ({type(exc).__name__}: {exc})") from exc
    if not isinstance(d, dict):
        raise FrameError(f"frame header must be a map, got {type(d).__name__}")
    missing = [k for k in _FIELDS if k not in d]
    if missing:
        raise FrameError(f"frame header lacks {', '.join(missing)}")
    for key, types in _FIELDS.items():
        value = d[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise FrameError(f"frame header field {key!r} has a {type(value).__name__}")
    if d["kind"] not in KINDS:
        raise FrameError(f"frame kind {d['kind']!r} is not one of {', '.join(KINDS)}")
    if not 0 <= d["io_group"] <= 255:
        raise FrameError(f"frame io_group {d['io_group']} is outside 0..255")
    if d["seq"] < 0 or d["offset"] < 0 or d["epoch"] < 0:
        raise FrameError("frame seq, offset and epoch are never negative")
    return FrameHeader(
        source=d["source"], epoch=d["epoch"], seq=d["seq"], io_group=d["io_group"],
        run=d["run"], t_recv=float(d["t_recv"]), kind=d["kind"], offset=d["offset"],
        last=d["last"],
    )


def decode_frame(parts: Sequence[bytes | memoryview]) -> tuple[FrameHeader, memoryview]:
    """Header and payload of a received multipart frame."""
    if len(parts) != 2:
        raise FrameError(f"a frame has 2 parts (header, payload), this one has {len(parts)}")
    return decode_header(parts[0]), memoryview(parts[1])


# ------------------------------------------------------------------ sequence bookkeeping


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
