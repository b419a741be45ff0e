"""Frame files a producer leaves on disk, read back for people: what is in them, in bounded memory.

A producer's frame log segments (``framelog-NAME-PID-N.bin``, renamed ``.stale`` when a dead
producer's frames belong to a run that is over) and its spill file (``spill-NAME-PID.bin``)
hold frames storage may never have written. Operators are told to keep them; this module is
how they can see what is in them (:func:`summarise_file`) and get their frames out (see
:mod:`~larpixdaq.pipeline.frameexport`).

Neither file has a magic number: both are records of :mod:`~larpixdaq.pipeline.framelog`
(``<u32 header length><u32 payload length><header msgpack><payload>``) from the first byte.
So a file is recognised by its content (:func:`sniff`): its first record's lengths are in
the protocol's bounds and its header decodes as a frame header, which neither HDF5 nor text
does; the file name only says which of the two it is, and lets an empty or damaged file of
that name still be read (and its damage told).

Reading (:func:`read_records`) goes one record at a time through the file, never the whole
file at once: a segment is 64 MB, a spill file can be gigabytes. A record cut short at the
end (a kill mid-write) is reported as torn; a record whose lengths or header make no sense
(a damaged disk, a file that is not a frame file past its start) is reported with its
offset, and reading goes on at the next place a valid record starts. Nothing raises on bad
bytes; only an unreadable file (``OSError``) does.

Pure here: :class:`SeqRanges` and :class:`FrameSummary` (fed frames and damage, they say what
a file holds); :func:`read_records`, :func:`sniff` and :func:`summarise_file` are the shell.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from larpixdaq.formats.pacman import HEADER, HEADER_BYTES, MSG_DATA, WORD_BYTES
from larpixdaq.pipeline.framelog import RECORD
from larpixdaq.pipeline.protocol import (
    KIND_DATA,
    KINDS,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    FrameHeader,
    ProtocolError,
    decode_header,
)

FRAME_LOG = "producer frame log"
SPILL_FILE = "producer spill file"

_NAMES = (
    (re.compile(r"^framelog-.+-\d+-\d+\.(bin|stale)$"), FRAME_LOG),
    (re.compile(r"^spill-.+-\d+\.bin$"), SPILL_FILE),
)

SEARCH_BYTES = 1 << 20
"""Bytes read at once while looking for the next record after damage."""

_MAP_START = re.compile(rb"[\x89-\x8f\xde]")
"""The first byte of a frame header's msgpack: a map of nine or more fields."""

MAX_LISTED = 20
"""Damaged places and holes listed in a summary at most (all are counted)."""


@dataclass(frozen=True)
class Record:
    """One frame read from a file: where its record starts, its header (decoded and as
    bytes) and its payload (or its first bytes, see :func:`read_records`)."""

    offset: int
    header: FrameHeader
    header_bytes: bytes
    payload: bytes
    payload_len: int


@dataclass(frozen=True)
class Damage:
    """Bytes that are no record: ``length`` bytes at ``offset``; ``torn`` for a record cut
    short at the end of the file, otherwise bytes skipped up to the next valid record."""

    offset: int
    length: int
    reason: str
    torn: bool = False


def _lengths_problem(hlen: int, plen: int) -> str | None:
    if not 0 < hlen <= MAX_HEADER_BYTES:
        return f"header length {hlen} is outside 1..{MAX_HEADER_BYTES}"
    if plen > MAX_PAYLOAD_BYTES:
        return f"payload length {plen} is over {MAX_PAYLOAD_BYTES}"
    return None


def _header_at(buf: bytes, at: int) -> FrameHeader | None:
    """The frame header of a record starting at ``buf[at]``, if one is there whole."""
    if len(buf) - at < RECORD.size:
        return None
    hlen, plen = RECORD.unpack_from(buf, at)
    if _lengths_problem(hlen, plen) is not None or len(buf) - at - RECORD.size < hlen:
        return None
    try:
        return decode_header(buf[at + RECORD.size:at + RECORD.size + hlen])
    except ProtocolError:
        return None


def _next_record(f: BinaryIO, start: int, size: int) -> int:
    """The offset of the first valid record at or after ``start`` (``size`` if none): read a
    window at a time, trying only places whose header would begin with a msgpack map."""
    overlap = RECORD.size + MAX_HEADER_BYTES
    at = start
    while at < size:
        f.seek(at)
        buf = f.read(SEARCH_BYTES + overlap)
        if not buf:
            break
        for m in _MAP_START.finditer(buf, RECORD.size):
            cand = m.start() - RECORD.size
            if cand >= SEARCH_BYTES:
                break
            if _header_at(buf, cand) is not None:
                return at + cand
        at += SEARCH_BYTES
    return size


def read_records(path: str | Path, *, payload_bytes: int | None = None
                 ) -> Iterator[Record | Damage]:
    """Every record of a frame file in order, and every damaged place as a :class:`Damage`
    (a torn end last). ``payload_bytes``: read at most this much of each payload (the rest
    is skipped; ``payload_len`` is the whole length). Memory: one record (at most a header
    and :data:`MAX_PAYLOAD_BYTES`) and a search window."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        at = 0
        while at < size:
            f.seek(at)
            head = f.read(RECORD.size)
            if len(head) < RECORD.size:
                yield Damage(at, len(head), "record lengths cut short", torn=True)
                return
            hlen, plen = RECORD.unpack(head)
            problem = _lengths_problem(hlen, plen)
            if problem is None:
                end = at + RECORD.size + hlen + plen
                raw = f.read(hlen)
                try:
                    header = decode_header(raw) if len(raw) == hlen else None
                except ProtocolError as exc:
                    problem = str(exc)
                else:
                    if header is None or end > size:
                        yield Damage(at, size - at, f"record of {end - at} bytes cut short "
                                     f"after {size - at}", torn=True)
                        return
                    payload = f.read(plen if payload_bytes is None
                                     else min(plen, payload_bytes))
                    yield Record(at, header, raw, payload, plen)
                    at = end
                    continue
            nxt = _next_record(f, at + 1, size)
            yield Damage(at, nxt - at, problem)
            at = nxt


def name_kind(path: str | Path) -> str | None:
    """What a frame file's name says it is (:data:`FRAME_LOG`, :data:`SPILL_FILE`), or None."""
    name = Path(path).name
    return next((kind for pattern, kind in _NAMES if pattern.match(name)), None)


def sniff(path: str | Path) -> str | None:
    """:data:`FRAME_LOG` or :data:`SPILL_FILE` if ``path`` holds frame records from its
    first byte (the name then tells which; frame log if it does not), or if it is named as
    one of them; None otherwise."""
    try:
        with open(path, "rb") as f:
            start = f.read(RECORD.size + MAX_HEADER_BYTES)
    except OSError:
        return None
    if _header_at(start, 0) is not None:
        return name_kind(path) or FRAME_LOG
    return name_kind(path)


class SeqRanges:
    """A set of seqs kept as sorted disjoint ranges: a stream of a million frames in order is
    one range. Pure."""

    def __init__(self) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []  # inclusive
        self.count = 0

    def add(self, seq: int) -> bool:
        """Add ``seq``; False if it was there already."""
        i = bisect.bisect_right(self._lo, seq) - 1
        if i >= 0 and seq <= self._hi[i]:
            return False
        self.count += 1
        joins_left = i >= 0 and self._hi[i] == seq - 1
        joins_right = i + 1 < len(self._lo) and self._lo[i + 1] == seq + 1
        if joins_left and joins_right:
            self._hi[i] = self._hi[i + 1]
            del self._lo[i + 1], self._hi[i + 1]
        elif joins_left:
            self._hi[i] = seq
        elif joins_right:
            self._lo[i + 1] = seq
        else:
            self._lo.insert(i + 1, seq)
            self._hi.insert(i + 1, seq)
        return True

    @property
    def first(self) -> int | None:
        return self._lo[0] if self._lo else None

    @property
    def last(self) -> int | None:
        return self._hi[-1] if self._hi else None

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    def holes(self) -> list[tuple[int, int]]:
        """The missing seqs between the first and the last, as inclusive ranges."""
        return [(h + 1, lo - 1) for h, lo in zip(self._hi, self._lo[1:], strict=False)]


@dataclass
class StreamSummary:
    """What one stream ``(source, epoch)`` has in the frames summarised."""

    source: str
    epoch: int
    seqs: SeqRanges = field(default_factory=SeqRanges)
    runs: set[int] = field(default_factory=set)
    io_groups: set[int] = field(default_factory=set)
    frames_by_kind: dict[str, int] = field(default_factory=dict)
    repeated: int = 0  # frames at a seq already seen
    words: int = 0
    not_pacman_data: int = 0  # data frames whose payload is no PACMAN data message
    msg_time: list[int] = field(default_factory=list)  # [first, last] message header times
    t_recv: list[float] = field(default_factory=list)  # [first, last] receive times
    last_frame: bool = False  # the stream's final frame is among them

    def result(self) -> dict[str, Any]:
        holes = self.seqs.holes()
        return {
            "source": self.source, "epoch": self.epoch, "runs": sorted(self.runs),
            "io_groups": sorted(self.io_groups),
            "frames": self.seqs.count + self.repeated,
            "frames_by_kind": {k: self.frames_by_kind[k] for k in KINDS
                               if k in self.frames_by_kind},
            "seq_first": self.seqs.first, "seq_last": self.seqs.last,
            "holes": [list(h) for h in holes[:MAX_LISTED]],
            "hole_count": len(holes),
            "missing_frames": sum(b - a + 1 for a, b in holes),
            "repeated_frames": self.repeated,
            "data_words": self.words,
            "not_pacman_data": self.not_pacman_data,
            "message_time": ({"first": self.msg_time[0], "last": self.msg_time[1]}
                             if self.msg_time else None),
            "t_recv": ({"first": self.t_recv[0], "last": self.t_recv[1]}
                       if self.t_recv else None),
            "stream_ended": self.last_frame,
        }


def _span(span: list, value: float) -> None:
    if span:
        span[0], span[1] = min(span[0], value), max(span[1], value)
    else:
        span.extend((value, value))


def pacman_time(payload: bytes | memoryview) -> int | None:
    """The UNIX seconds of a PACMAN data message's header; None if it is not one."""
    if len(payload) < HEADER_BYTES or bytes(payload[:1]) != MSG_DATA:
        return None
    return int(HEADER.unpack_from(payload, 0)[1])


class FrameSummary:
    """What a frame file holds, fed frame by frame and damage by damage. Pure."""

    def __init__(self) -> None:
        self.streams: dict[tuple[str, int], StreamSummary] = {}
        self.records = 0
        self.torn: Damage | None = None
        self.damaged: list[Damage] = []
        self.damaged_count = 0
        self.damaged_bytes = 0

    def add_frame(self, header: FrameHeader, payload_len: int, msg_time: int | None) -> None:
        """One frame: its header, its payload's length, and the time in its PACMAN message
        header (None if it has none)."""
        h = header
        s = self.streams.get(h.stream)
        if s is None:
            s = self.streams[h.stream] = StreamSummary(h.source, h.epoch)
        self.records += 1
        if not s.seqs.add(h.seq):
            s.repeated += 1
        s.runs.add(h.run)
        s.io_groups.add(h.io_group)
        s.frames_by_kind[h.kind] = s.frames_by_kind.get(h.kind, 0) + 1
        s.last_frame = s.last_frame or h.last
        _span(s.t_recv, h.t_recv)
        if h.kind == KIND_DATA:
            if msg_time is None:
                s.not_pacman_data += 1
            else:
                s.words += max(0, (payload_len - HEADER_BYTES) // WORD_BYTES)
                _span(s.msg_time, msg_time)

    def add_damage(self, damage: Damage) -> None:
        if damage.torn:
            self.torn = damage
            return
        self.damaged_count += 1
        self.damaged_bytes += damage.length
        if len(self.damaged) < MAX_LISTED:
            self.damaged.append(damage)

    def result(self) -> dict[str, Any]:
        streams = [self.streams[k].result() for k in sorted(self.streams)]
        return {
            "records": self.records,
            "frames_by_kind": {k: n for k in KINDS
                               if (n := sum(s["frames_by_kind"].get(k, 0) for s in streams))},
            "data_words": sum(s["data_words"] for s in streams),
            "runs": sorted({r for s in streams for r in s["runs"]}),
            "streams": streams,
            "torn_tail": (None if self.torn is None else
                          {"offset": self.torn.offset, "bytes": self.torn.length,
                           "reason": self.torn.reason}),
            "damaged": {"count": self.damaged_count, "bytes": self.damaged_bytes,
                        "places": [{"offset": d.offset, "bytes": d.length, "reason": d.reason}
                                   for d in self.damaged]},
        }


def summarise_file(path: str | Path) -> dict[str, Any]:
    """The summary of one frame file (see :class:`FrameSummary`), read a record at a time
    (of a payload only its PACMAN message header). Raises FileNotFoundError, or OSError if
    it cannot be read."""
    path = Path(path)
    kind = sniff(path)
    summary = FrameSummary()
    for item in read_records(path, payload_bytes=HEADER_BYTES):
        if isinstance(item, Damage):
            summary.add_damage(item)
        else:
            summary.add_frame(item.header, item.payload_len, pacman_time(item.payload))
    out: dict[str, Any] = {"path": str(path), "format": kind or FRAME_LOG,
                           "size_bytes": path.stat().st_size}
    out.update(summary.result())
    return out


def _range(span: dict[str, Any] | None, fmt: Any = str) -> str:
    if not span:
        return "none"
    return f"{fmt(span['first'])} .. {fmt(span['last'])}"


def render_text(summary: dict[str, Any], when: Any = str) -> str:
    """A :func:`summarise_file` summary as a short report; ``when`` shows a UNIX time."""
    s = summary
    kinds = ", ".join(f"{k} {n:,}" for k, n in s["frames_by_kind"].items()) or "none"
    lines = [s["path"], f"  format        {s['format']}",
             f"  size          {s['size_bytes']:,} bytes",
             f"  frames        {s['records']:,} ({kinds})",
             f"  data packets  {s['data_words']:,} words",
             f"  runs          {', '.join(map(str, s['runs'])) or 'none'}"]
    torn = s["torn_tail"]
    lines.append("  torn tail     " + ("none" if torn is None else
                                      f"{torn['bytes']} bytes at offset {torn['offset']:,} "
                                      f"({torn['reason']})"))
    bad = s["damaged"]
    lines.append(f"  damaged       {bad['count']} place(s), {bad['bytes']:,} bytes skipped")
    for d in bad["places"][:5]:
        lines.append(f"    at offset {d['offset']:,}: {d['bytes']:,} bytes ({d['reason']})")
    for st in s["streams"]:
        kinds = ", ".join(f"{k} {n:,}" for k, n in st["frames_by_kind"].items())
        holes = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in st["holes"])
        more = st["hole_count"] - len(st["holes"])
        lines += [
            f"  stream {st['source']} epoch {st['epoch']}",
            f"    runs          {', '.join(map(str, st['runs']))}; io_group "
            f"{', '.join(map(str, st['io_groups']))}",
            f"    seq           {st['seq_first']} .. {st['seq_last']}"
            + (", ended (last frame)" if st["stream_ended"] else ""),
            f"    holes         {st['missing_frames']:,} frame(s) missing"
            + (f": seq {holes}" + (f", ... ({st['hole_count']} in all)" if more else "")
               if holes else ""),
            f"    frames        {st['frames']:,} ({kinds}); repeated {st['repeated_frames']}",
            f"    data packets  {st['data_words']:,} words"
            + (f"; {st['not_pacman_data']} data frame(s) not PACMAN data"
               if st["not_pacman_data"] else ""),
            f"    message time  {_range(st['message_time'], when)}",
            f"    received      {_range(st['t_recv'], when)}",
        ]
    return "\n".join(lines)
