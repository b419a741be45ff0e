"""The data path's wire protocol: every message between producer, aggregator, storage, monitor.

Each message is a ZeroMQ multipart message whose first part is a verb. The components
build and parse messages only here, so a message's layout is written down once:

====================== ========================================= ==========================
message                parts                                     sent
====================== ========================================= ==========================
:class:`ProducerHello` ``HELLO``, ``{source, io_group}``         producer -> aggregator
:class:`Frame`         ``FRAME``, header, payload                producer -> aggregator ->
                                                                 storage; aggregator ->
                                                                 monitors (sampled)
:class:`Credit`        ``CREDIT``, ``{bytes}``                   aggregator -> producer;
                                                                 storage -> aggregator
:class:`StorageHello`  ``HELLO``, ``{committed: [[source,        storage -> aggregator
                       epoch, seq], ...], credit}``
:class:`Ack`           ``ACK``, ``{streams: [[source, epoch,     storage -> aggregator;
                       seq], ...]}``                             aggregator -> producer
                                                                 (relayed, its streams)
:class:`Welcome`       ``WELCOME``, ``{aggregator}``             aggregator -> producer
                                                                 (the answer to HELLO)
:class:`Stats`         ``stats``, ``{counters, last_seq}``       aggregator -> monitors
====================== ========================================= ==========================

Bodies are msgpack maps. A frame's header is a msgpack map too (the fields and their checks
are those of :class:`FrameHeader`, see ``docs/datapath.md``); its payload is one PACMAN
message for a ``data`` frame, UTF-8 text for ``info`` and ``configs`` rows for ``configs``.

A ROUTER socket puts the peer's identity in front of what it receives; the parsers here take
the parts after it. Every parser raises :class:`ProtocolError` (never anything else) for a
message it cannot take, and the error's ``part`` says which part is wrong (``parts``: the
verb or the number of parts, ``header``: the frame header, ``body``: the msgpack body), so
each receiver counts what it rejects its own way. Received parts may be ``bytes``,
``memoryview`` or ``zmq.Frame``; a :class:`Frame` keeps its header and payload parts as they
came so they can be forwarded without a copy. Nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from larpixdaq.errors import FormatError

HELLO, CREDIT, ACK, FRAME, STATS = b"HELLO", b"CREDIT", b"ACK", b"FRAME", b"stats"
WELCOME = b"WELCOME"

MAX_PAYLOAD_BYTES = 8 << 20
"""A frame's payload at most: one PACMAN message or one configuration snapshot is far
smaller; a bigger one is refused, never held (it would take the window from the others)."""
MAX_HEADER_BYTES = 1024
"""A frame header's msgpack bytes at most (a real one is about 120)."""
MAX_BODY_BYTES = 1 << 20
"""Any other message's body at most (an ACK of many streams is a few kB)."""
MAX_SOURCE_CHARS = 128
"""A source (producer) name's characters at most."""
MAX_SEQ = 2**63 - 1
"""seq and offset at most: what int64 bookkeeping holds."""
MAX_EPOCH = 2**62 - 1
"""An epoch at most (see :mod:`larpixdaq.runcontrol.admitted`)."""

KINDS = ("data", "info", "configs")
KIND_DATA, KIND_INFO, KIND_CONFIGS = KINDS

Part = Any
"""One received part: ``bytes``, ``memoryview`` or ``zmq.Frame`` (anything with a buffer)."""
StreamSeq = tuple[str, int, int]
"""(source, epoch, seq): the highest seq of one stream, as HELLO and ACK list them."""


class ProtocolError(FormatError):
    """A message that breaks the protocol; ``part`` says where (``parts``, ``header`` or
    ``body``) and the text says what."""

    part = "parts"


class OversizeError(ProtocolError):
    """A part larger than the protocol allows (refused before it is parsed or held)."""

    part = "size"


class FrameError(ProtocolError):
    """A frame header that is not valid; the message says which field is wrong."""

    part = "header"


class BodyError(ProtocolError):
    """A message body that is not msgpack or not the map its verb needs."""

    part = "body"


def pack(obj: Any) -> bytes:
    """The msgpack bytes of a body."""
    return msgpack.packb(obj)


def unpack(raw: Part) -> Any:
    """A body from its msgpack bytes; :class:`BodyError` if it is not msgpack,
    :class:`OversizeError` if it is longer than :data:`MAX_BODY_BYTES`."""
    _bounded(raw, MAX_BODY_BYTES, "message body")
    try:
        return msgpack.unpackb(bytes(_buffer(raw)), raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise BodyError(f"body is not msgpack ({type(exc).__name__}: {exc})") from exc


def _buffer(part: Part) -> Any:
    return getattr(part, "buffer", part)  # a zmq.Frame's bytes without a copy


def _bounded(part: Part, limit: int, what: str) -> None:
    size = len(_buffer(part))
    if size > limit:
        raise OversizeError(f"{what} of {size} bytes is over the {limit}-byte limit")


def _verb(part: Part) -> bytes:
    return bytes(_buffer(part))[:16]


def _map(raw: Part) -> dict:
    body = unpack(raw)
    if not isinstance(body, dict):
        raise BodyError(f"body must be a map, got {type(body).__name__}")
    return body


def _int(value: Any, what: str) -> int:
    """A count from a body: a number (a float is cut to an int, as ``int()`` does)."""
    if not isinstance(value, (int, float)):
        raise BodyError(f"{what} must be a number, got {type(value).__name__}")
    try:
        n = int(value)
    except (OverflowError, ValueError) as exc:  # inf, nan
        raise BodyError(f"{what} is {value!r}") from exc
    if not -(2**63) <= n < 2**64:  # what msgpack carries
        raise BodyError(f"{what} {value!r} is out of range")
    return n


def _stream_seqs(value: Any, what: str) -> tuple[StreamSeq, ...]:
    if not isinstance(value, (list, tuple)):
        raise BodyError(f"{what} must be a list, got {type(value).__name__}")
    out = []
    for entry in value:
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise BodyError(f"each of {what} is [source, epoch, seq], got {entry!r:.60}")
        source, epoch, seq = entry
        out.append((str(source), _int(epoch, "epoch"), _int(seq, "seq")))
    return tuple(out)


# ------------------------------------------------------------------ frame headers


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


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """Where a frame's payload comes from and where it sits in its stream.

    ``source``: the producer (one per board); ``epoch``: one stream of that producer (new at
    every prepare and restart), so ``(source, epoch)`` names a stream; ``seq``: 0, 1, 2, ...
    in the stream with no holes; ``offset``: PACMAN words the stream sent before this frame,
    so a hole in ``seq`` says how many packets it swallowed; ``io_group``: the board's (not
    inside PACMAN messages); ``run``: the run number (-1 outside a run); ``t_recv``: UNIX
    time the producer received the payload; ``kind``: data, info or configs; ``last``: the
    stream's final frame (the "Ending run" marker).
    """

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
    _check_ranges(h.source, h.seq, h.offset, h.epoch, h.run)
    return msgpack.packb(
        {"source": h.source, "epoch": h.epoch, "seq": h.seq, "offset": h.offset,
         "io_group": h.io_group, "run": h.run, "t_recv": h.t_recv, "kind": h.kind,
         "last": h.last}
    )


def _check_ranges(source: str, seq: int, offset: int, epoch: int, run: int) -> None:
    """Bounds every receiver relies on (int64 arithmetic, names that fit a log line)."""
    if not 0 <= seq <= MAX_SEQ or not 0 <= offset <= MAX_SEQ:
        raise FrameError(f"frame seq and offset are never negative, at most {MAX_SEQ}")
    if not 0 <= epoch <= MAX_EPOCH:
        raise FrameError(f"frame epoch is never negative, at most {MAX_EPOCH}")
    if not -1 <= run <= MAX_SEQ:
        raise FrameError(f"frame run {run} is outside -1..{MAX_SEQ}")
    if not 0 < len(source) <= MAX_SOURCE_CHARS:
        raise FrameError(f"frame source is 1 to {MAX_SOURCE_CHARS} characters")


def decode_header(raw: Part) -> FrameHeader:
    """Parse and check a header; :class:`FrameError` names the first thing wrong (an
    :class:`OversizeError` if it is longer than :data:`MAX_HEADER_BYTES`)."""
    _bounded(raw, MAX_HEADER_BYTES, "frame header")
    try:
        d = msgpack.unpackb(bytes(_buffer(raw)), raw=False)
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
    _check_ranges(d["source"], d["seq"], d["offset"], d["epoch"], d["run"])
    return FrameHeader(
        source=d["source"], epoch=d["epoch"], seq=d["seq"], io_group=d["io_group"],
        run=d["run"], t_recv=float(d["t_recv"]), kind=d["kind"], offset=d["offset"],
        last=d["last"],
    )


# ------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: its header and payload. ``raw_header`` is the header part as received
    (forwarded unchanged, so a monitor sees the producer's own header); when building, it
    is left None and the header is encoded."""

    header: FrameHeader
    payload: Part
    raw_header: Part = field(default=None, compare=False)

    @property
    def size(self) -> int:
        """Payload bytes: what credit is counted in."""
        return len(self.payload)

    def parts(self) -> list[Part]:
        raw = self.raw_header if self.raw_header is not None else encode_header(self.header)
        return [FRAME, raw, self.payload]


@dataclass(frozen=True, slots=True)
class ProducerHello:
    """A producer is there (again): the aggregator resets its credit. ``io_group`` is None
    when the producer did not say it."""

    source: str
    io_group: int | None = None

    def parts(self) -> list[bytes]:
        return [HELLO, pack({"source": self.source, "io_group": self.io_group})]


@dataclass(frozen=True, slots=True)
class Credit:
    """The receiver may send ``nbytes`` more payload bytes."""

    nbytes: int

    def parts(self) -> list[bytes]:
        return [CREDIT, pack({"bytes": self.nbytes})]


@dataclass(frozen=True, slots=True)
class StorageHello:
    """A storage (re)started: what it has on disk per stream, and the credit it grants."""

    committed: tuple[StreamSeq, ...] = ()
    credit: int = 0

    def parts(self) -> list[bytes]:
        return [HELLO, pack({"committed": [list(s) for s in self.committed],
                             "credit": self.credit})]


@dataclass(frozen=True, slots=True)
class Ack:
    """Everything up to each stream's seq is committed on disk."""

    streams: tuple[StreamSeq, ...] = ()

    def parts(self) -> list[bytes]:
        return [ACK, pack({"streams": [list(s) for s in self.streams]})]


@dataclass(frozen=True, slots=True)
class Welcome:
    """The aggregator's answer to a producer's HELLO. ``aggregator`` is random per aggregator
    process: a producer that sees it change knows the frames it sent to the old one and has
    not had acknowledged may be gone, and sends them again."""

    aggregator: int

    def parts(self) -> list[bytes]:
        return [WELCOME, pack({"aggregator": self.aggregator})]


@dataclass(frozen=True, slots=True)
class Stats:
    """The aggregator's counters and last seq per stream, once a second. ``counters`` is
    None when the body carried none (monitors keep what they had)."""

    counters: Mapping[str, Any] | None = None
    last_seq: tuple[StreamSeq, ...] = ()

    def parts(self) -> list[bytes]:
        counters = dict(self.counters) if self.counters is not None else None
        return [STATS, pack({"counters": counters,
                             "last_seq": [list(s) for s in self.last_seq]})]


def stream_seqs(seqs: Mapping[tuple[str, int], int]) -> tuple[StreamSeq, ...]:
    """``{(source, epoch): seq}`` as the (source, epoch, seq) list HELLO, ACK and stats carry."""
    return tuple((s[0], s[1], q) for s, q in seqs.items())


# ------------------------------------------------------------------ parsers, per receiver


def _need(parts: Sequence[Part], n: int, layout: str) -> None:
    if len(parts) != n:
        raise ProtocolError(f"{_verb(parts[0])!r} is {layout}; this one has {len(parts)} parts")


def _frame(parts: Sequence[Part]) -> Frame:
    _need(parts, 3, "FRAME, header, payload")
    _bounded(parts[2], MAX_PAYLOAD_BYTES, "frame payload")
    return Frame(decode_header(parts[1]), parts[2], parts[1])


def _producer_hello(parts: Sequence[Part]) -> ProducerHello:
    _need(parts, 2, "HELLO, body")
    body = _map(parts[1])
    io_group = body.get("io_group")
    source = body.get("source")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE_CHARS:
        raise BodyError(f"a HELLO's source is a name of 1 to {MAX_SOURCE_CHARS} characters")
    return ProducerHello(source, io_group if isinstance(io_group, int) else None)


def _credit(body: dict) -> Credit:
    if "bytes" not in body:
        raise BodyError("a CREDIT body lacks bytes")
    return Credit(_int(body["bytes"], "bytes"))


def _credit_message(parts: Sequence[Part]) -> Credit:
    _need(parts, 2, "CREDIT, body")
    return _credit(_map(parts[1]))


def _storage_body(parts: Sequence[Part]) -> dict:
    """Storage's messages: the body may be left out (an empty map); parts after it are
    ignored."""
    return _map(parts[1]) if len(parts) > 1 else {}


def _storage_hello(parts: Sequence[Part]) -> StorageHello:
    body = _storage_body(parts)
    return StorageHello(_stream_seqs(body.get("committed", []), "committed"),
                        _int(body.get("credit", 0), "credit"))


def _ack(parts: Sequence[Part]) -> Ack:
    body = _storage_body(parts)
    if "streams" not in body:
        raise BodyError("an ACK body lacks streams")
    return Ack(_stream_seqs(body["streams"], "streams"))


def _welcome(parts: Sequence[Part]) -> Welcome:
    _need(parts, 2, "WELCOME, body")
    body = _map(parts[1])
    if "aggregator" not in body:
        raise BodyError("a WELCOME body lacks aggregator")
    return Welcome(_int(body["aggregator"], "aggregator"))


def _ack_message(parts: Sequence[Part]) -> Ack:
    _need(parts, 2, "ACK, body")
    return _ack(parts)


def _stats(parts: Sequence[Part]) -> Stats:
    _need(parts, 2, "stats, body")
    body = unpack(parts[1])
    # Monitors only display stats: a body without counters (or a malformed last_seq) is no
    # error, the monitor keeps what it had.
    if not isinstance(body, dict):
        return Stats()
    counters = body.get("counters")
    try:
        last_seq = _stream_seqs(body.get("last_seq", []), "last_seq")
    except BodyError:
        last_seq = ()
    return Stats(counters if isinstance(counters, dict) else None, last_seq)


Parser = Callable[[Sequence[Part]], Any]


def _parse(parts: Sequence[Part], accepted: Mapping[bytes, Parser], who: str) -> Any:
    verb = _verb(parts[0]) if parts else b""
    take = accepted.get(verb)
    if take is None:
        raise ProtocolError(f"unexpected {who} {verb!r} of {len(parts)} parts")
    return take(parts)


_FROM_PRODUCER: dict[bytes, Parser] = {FRAME: _frame, HELLO: _producer_hello}
_FROM_STORAGE: dict[bytes, Parser] = {HELLO: _storage_hello, ACK: _ack,
                                      CREDIT: lambda parts: _credit(_storage_body(parts))}
_TO_PRODUCER: dict[bytes, Parser] = {CREDIT: _credit_message}
_FROM_AGGREGATOR: dict[bytes, Parser] = {CREDIT: _credit_message, WELCOME: _welcome,
                                         ACK: _ack_message}
_TO_STORAGE: dict[bytes, Parser] = {FRAME: _frame}
_TO_MONITOR: dict[bytes, Parser] = {FRAME: _frame, STATS: _stats}


def parse_producer_message(parts: Sequence[Part]) -> Frame | ProducerHello:
    """What the aggregator receives from a producer (after the identity)."""
    return _parse(parts, _FROM_PRODUCER, "producer message")


def parse_storage_message(parts: Sequence[Part]) -> StorageHello | Credit | Ack:
    """What the aggregator receives from storage (after the identity)."""
    return _parse(parts, _FROM_STORAGE, "storage message")


def parse_credit(parts: Sequence[Part]) -> Credit:
    """What a producer receives from the aggregator: only ``CREDIT``."""
    return _parse(parts, _TO_PRODUCER, "message from the aggregator")


def parse_aggregator_message(parts: Sequence[Part]) -> Credit | Welcome | Ack:
    """What a producer receives from the aggregator: ``CREDIT``, ``WELCOME`` (the answer to
    its HELLO) and ``ACK`` (storage's acknowledgements of its frames, relayed)."""
    return _parse(parts, _FROM_AGGREGATOR, "message from the aggregator")


def parse_frame(parts: Sequence[Part]) -> Frame:
    """What storage receives from the aggregator: only ``FRAME``."""
    return _parse(parts, _TO_STORAGE, "message where a frame belongs")


def parse_monitor_message(parts: Sequence[Part]) -> Frame | Stats:
    """What a monitor receives on the aggregator's feed: sampled frames and stats."""
    return _parse(parts, _TO_MONITOR, "message on the monitor feed")
