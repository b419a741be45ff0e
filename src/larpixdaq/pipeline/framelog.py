"""The producer's frame log: every frame is on local disk before it leaves the process.

Why: a producer SIGKILLed mid-run loses its memory, and with it what it had read from its
board, framed, and storage had not yet committed (up to the whole hold while the path is
down). A PACMAN board does not send again, and a simulated board lives in the process. So
each frame is appended to a file before it is sent (Kafka's producer keeps a record until
the last hop has it; here the record outlives the process). The page cache outlives a killed
process, so a ``write`` before the send is enough for a process crash; a machine crash (power
cut) would need an ``fsync`` per frame, which is not done. A restarted producer of the same
name reads what its dead predecessor logged, sends it again ahead of its own stream (storage
drops what it already has by ``(source, epoch, seq)``), ends the dead stream with a last
frame, and knows from the last logged data message where the board's data stops (the start
of the hole, see :mod:`~larpixdaq.pipeline.gapmark`).

Files: ``framelog-<name>-<pid>-<n>.bin`` (segment ``n`` of process ``pid``) in the producer's
data directory, created exclusively and only appended to. Record:
``<u32 header length><u32 payload length><header><payload>``: the frame header's msgpack bytes
and the payload, as sent (the spill file of :mod:`~larpixdaq.pipeline.backlog` uses the same
record). A segment is closed after :data:`SEGMENT_BYTES`; a closed segment whose frames storage
has all acknowledged is removed. The newest segment stays until the run's stream is finished
and acknowledged (it holds where the data stops); then the whole log goes, so a log on disk
always holds frames of a run not known to be complete. A kill mid-write leaves a torn record
at a segment's end: the reader stops there and counts it.

Pure here: the record codec (:func:`pack_record`, :func:`iter_records`) and what to do with
a predecessor's frames (:class:`RecoveryPlan`); :class:`FrameLog`, :func:`read_log` and
:class:`LogFiles` are the file shell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from larpixdaq.pipeline.protocol import KIND_INFO, FrameHeader, ProtocolError, decode_header
from larpixdaq.processes import process_alive

log = logging.getLogger("larpixdaq.framelog")

RECORD = struct.Struct("<II")
"""A record's two lengths: header bytes, payload bytes."""

SEGMENT_BYTES = 64 << 20
"""Bytes after which a segment is closed and a new one begun (a closed one can be removed)."""

RETRY_SECONDS = 1.0
"""After a write error, frames go unlogged (counted) this long before a new segment is tried:
a full disk must not cost a file per frame."""

TAKEOVER_TEXT = b"stream taken over by a restarted producer"
"""The payload of the last frame a restarted producer sends in a dead predecessor's stream
(an INFO row of the run file, at most 64 bytes)."""


def pack_record(header: bytes, payload: bytes) -> bytes:
    """The bytes before ``header`` and ``payload`` in a record (write all three in order)."""
    return RECORD.pack(len(header), len(payload))


def iter_records(data: bytes | memoryview) -> Iterator[tuple[bytes, bytes] | None]:
    """The ``(header, payload)`` records of ``data`` in order; a torn record at the end (a
    kill mid-write) yields ``None`` once and ends the iteration."""
    view = memoryview(data)
    at, end = 0, len(view)
    while at < end:
        if end - at < RECORD.size:
            yield None
            return
        hlen, plen = RECORD.unpack_from(view, at)
        start = at + RECORD.size
        if end - start < hlen + plen:
            yield None
            return
        yield bytes(view[start:start + hlen]), bytes(view[start + hlen:start + hlen + plen])
        at = start + hlen + plen


@dataclass(frozen=True)
class LoggedFrame:
    """One frame a dead producer logged: its header (decoded and as bytes) and payload."""

    header: FrameHeader
    header_bytes: bytes
    payload: bytes


@dataclass
class LogFiles:
    """The log files dead processes of a name left, oldest first. Their frames are read one
    segment at a time (:meth:`frames`), never all at once: a log written while the path was
    down for minutes can be larger than memory."""

    paths: list[Path] = field(default_factory=list)
    torn: int = 0  # records cut short by a kill mid-write (at most one per segment)
    bad: int = 0  # records whose header is not a valid frame header, or unreadable files

    def frames(self) -> Iterator[LoggedFrame]:
        """Every frame in order (a pass reads the files again; ``torn``, ``bad`` count)."""
        for p in self.paths:
            try:
                data = p.read_bytes()
            except OSError as exc:
                log.warning("could not read %s: %s", p, exc)
                self.bad += 1
                continue
            for rec in iter_records(data):
                if rec is None:
                    self.torn += 1
                    break
                try:
                    header = decode_header(rec[0])
                except ProtocolError:
                    self.bad += 1
                    continue
                yield LoggedFrame(header, rec[0], rec[1])


RESEND, STALE, REPEAT = "resend", "stale", "repeat"
"""What :meth:`RecoveryPlan.take` says of a frame."""


class RecoveryPlan:
    """What a restarted producer does with its predecessor's frames when it prepares run
    ``run_number``, one frame at a time: a frame of this run is sent again (:data:`RESEND`,
    in the order logged), one of another run is :data:`STALE` (a finished run: storage no
    longer takes it), one already taken (the same stream and seq, logged twice by a
    successor that died before removing its predecessor's files) is a :data:`REPEAT`. Then
    each resent stream that has no last frame gets one (:meth:`takeover`). Pure."""

    def __init__(self, run_number: int) -> None:
        self.run_number = run_number
        self._seen: set[tuple[int, int]] = set()
        self._ends: dict[int, tuple[int, int]] = {}  # epoch -> (next seq, next offset)
        self._finished: set[int] = set()

    def take(self, frame: LoggedFrame, words: int) -> str:
        """The verdict on the next frame; ``words``: its PACMAN words (0 for other kinds),
        so the takeover frame's ``offset`` continues the stream's word count."""
        h = frame.header
        key = (h.epoch, h.seq)
        if key in self._seen:
            return REPEAT
        self._seen.add(key)
        if h.run != self.run_number:
            return STALE
        nxt = (h.seq + 1, h.offset + words)
        if nxt > self._ends.get(h.epoch, (-1, -1)):
            self._ends[h.epoch] = nxt
        if h.last:
            self._finished.add(h.epoch)
        return RESEND

    def takeover(self) -> list[tuple[int, int, int]]:
        """``(epoch, seq, offset)`` of the last frame each resent stream still needs."""
        return [(e, s, o) for e, (s, o) in self._ends.items() if e not in self._finished]


def takeover_header(name: str, io_group: int, run: int, epoch: int, seq: int, offset: int,
                    now: float) -> FrameHeader:
    """The header of the last frame of a dead predecessor's stream (see :data:`TAKEOVER_TEXT`)."""
    return FrameHeader(name, epoch, seq, io_group, run, now, KIND_INFO, offset, True)


def log_glob(name: str) -> str:
    return f"framelog-{name}-*.bin"


def read_log(directory: str | Path, name: str,
             alive: Callable[[int], bool] = process_alive) -> LogFiles:
    """The logs of dead processes of ``name`` in ``directory`` (not this process's, nor
    those of processes ``alive`` says run), oldest first (by the process's first segment's
    modification time, then segment). Nothing is read yet (see :meth:`LogFiles.frames`)."""
    found = []
    for p in Path(directory).glob(log_glob(name)):
        parts = p.stem.rsplit("-", 2)
        try:
            pid, n = int(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not alive(pid):
            found.append((pid, n, p))
    first: dict[int, float] = {}
    for pid, _n, p in found:
        try:
            t = p.stat().st_mtime
        except OSError:
            continue
        first[pid] = min(first.get(pid, t), t)
    found.sort(key=lambda x: (first.get(x[0], 0.0), x[0], x[1]))
    return LogFiles([p for _, _, p in found])


class FrameLog:
    """This process's log (see the module docstring): :meth:`append` every frame before it
    is sent, :meth:`flush` before sending, :meth:`trim` on acknowledgements, :meth:`reset`
    when a stream is complete or a new run begins."""

    def __init__(self, directory: str | Path, name: str, segment_bytes: int = SEGMENT_BYTES,
                 retry_seconds: float = RETRY_SECONDS) -> None:
        self.directory = Path(directory)
        self.name = name
        self.segment_bytes = int(segment_bytes)
        self.retry_seconds = float(retry_seconds)
        self._pid = os.getpid()
        self._n = 0
        self._file = None
        self._size = 0
        self._open_streams: dict[int, int] = {}  # epoch -> highest seq in the open segment
        self._closed: list[tuple[Path, dict[int, int]]] = []
        self._dirty = False
        self._retry_at = 0.0
        self.frames_logged = 0
        self.frames_not_logged = 0  # a write error: the frame is sent, but not crash-safe
        self.segments_removed = 0

    def _path(self, n: int) -> Path:
        return self.directory / f"framelog-{self.name}-{self._pid}-{n}.bin"

    @property
    def paths(self) -> list[Path]:
        """This process's segments on disk, oldest first."""
        out = [p for p, _ in self._closed]
        if self._file is not None:
            out.append(self._path(self._n))
        return out

    def append(self, epoch: int, seq: int, header: bytes, payload: bytes) -> bool:
        """Log one frame; False (counted) if it could not be written. After a write error
        (a full disk) the log tries again ``retry_seconds`` later, in a new segment."""
        if self._file is None and time.monotonic() < self._retry_at:
            self.frames_not_logged += 1
            return False
        try:
            if self._file is not None and self._size >= self.segment_bytes:
                self._close_segment()
            if self._file is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._n += 1
                # Created exclusively: a file another process left is never touched.
                self._file = open(self._path(self._n), "xb")  # noqa: SIM115
                self._size = 0
            f = self._file
            f.write(pack_record(header, payload))
            f.write(header)
            f.write(payload)
        except OSError as exc:
            self.frames_not_logged += 1
            if self.frames_not_logged == 1:
                log.error("%s: could not log a frame (%s): frames sent from now on may be "
                          "lost if this process dies", self.name, exc)
            self._abandon_segment()
            self._retry_at = time.monotonic() + self.retry_seconds
            return False
        self._size += RECORD.size + len(header) + len(payload)
        if seq > self._open_streams.get(epoch, -1):
            self._open_streams[epoch] = seq
        self._dirty = True
        self.frames_logged += 1
        return True

    def flush(self) -> None:
        """Hand what was appended to the kernel (it then outlives this process)."""
        if not self._dirty or self._file is None:
            return
        try:
            self._file.flush()
        except OSError as exc:
            self.frames_not_logged += 1
            log.error("%s: could not write the frame log: %s", self.name, exc)
            self._abandon_segment()
            self._retry_at = time.monotonic() + self.retry_seconds
        self._dirty = False

    def trim(self, acked: dict[int, int]) -> None:
        """Remove closed segments whose every frame storage has acknowledged."""
        keep = []
        for path, streams in self._closed:
            if all(acked.get(e, -1) >= s for e, s in streams.items()):
                self._remove(path)
            else:
                keep.append((path, streams))
        self._closed = keep

    def reset(self) -> None:
        """Remove every segment of this process (its frames are committed, or of a run that
        is over); the next append begins a new one."""
        self._abandon_segment()
        for path, _ in self._closed:
            self._remove(path)
        self._closed = []

    def close(self) -> None:
        """Close the open segment and keep every file (a successor may need them)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def _close_segment(self) -> None:
        assert self._file is not None
        self._file.close()
        self._closed.append((self._path(self._n), dict(self._open_streams)))
        self._file = None
        self._open_streams = {}

    def _abandon_segment(self) -> None:
        """Close the open segment after an error (its tail may be torn) or for a reset: the
        next append starts a new one; a reset removes it."""
        if self._file is None:
            return
        path = self._path(self._n)
        with contextlib.suppress(OSError):
            self._file.close()
        self._file = None
        self._closed.append((path, dict(self._open_streams)))
        self._open_streams = {}

    def _remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: could not remove %s: %s", self.name, path, exc)
            return
        self.segments_removed += 1
