"""PACMAN messages: the bytes a PACMAN readout board and its host exchange over ZeroMQ.

Everything that affects how PACMAN bytes are read or written lives here, and nothing here
touches a socket. A message is an 8-byte header (type, UNIX seconds, word count) followed
by 16-byte words.

Two very different paths share the format:

* the **data path** (`decode_data_messages`) turns whole batches of ``D`` messages into
  rows of the LArPix+HDF5 ``packets`` table with vectorised numpy code. It never raises on
  bad bytes: a malformed part is skipped, counted by kind in ``DecodeResult.errors``, and
  the rest of the batch is decoded;
* the **control path** (`encode_request` / `decode_message`) handles the few words of a
  command or reply as small typed objects, and raises :class:`FormatError` on anything
  malformed, so the board can answer with an ``E`` word.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from larpixdaq.errors import FormatError
from larpixdaq.formats import rows as R
from larpixdaq.formats.packets import encode_packets

HEADER = struct.Struct("<cLxH")
HEADER_BYTES = HEADER.size  # 8
WORD_BYTES = 16
MAX_WORDS = 0xFFFF

# PACMAN board registers the DAQ uses (addresses in the board's own register space, written
# and read with W/R words): the client drives them and the simulated board answers them.
TILE_ENABLE_REG = 0x10  # one bit per tile: power
RX_ENABLE_REG = 0x18  # one bit per UART: receive
CLOCK_CTRL_REG = 0x1010
CLOCK_CTRL_RESET_BIT = 1 << 2  # a 1 -> 0 edge resets the chips
RESET_LENGTH_REG = 0x1014

MSG_DATA, MSG_REQUEST, MSG_REPLY = b"D", b"?", b"!"
WORD_DATA, WORD_TRIG, WORD_SYNC = ord("D"), ord("T"), ord("S")
WORD_PING, WORD_WRITE, WORD_READ, WORD_TX, WORD_ERR = b"P", b"W", b"R", b"D", b"E"

# One dtype with overlapping fields: each word type reads the bytes it needs, in place.
WORD_DTYPE = np.dtype(
    {
        "names": ["type", "sub", "io_channel", "clk_source", "receipt_timestamp", "time",
                  "packet", "p0", "p1", "p2", "p3", "p5", "p6", "p7", "packet_ts"],
        "formats": ["u1", "u1", "u1", "u1", "<u4", "<u4",
                    "<u8", "u1", "u1", "u1", "u1", "u1", "u1", "u1", "<u4"],
        "offsets": [0, 1, 1, 2, 2, 4, 8, 8, 9, 10, 11, 13, 14, 15, 10],
        "itemsize": WORD_BYTES,
    }
)
"""A 16-byte PACMAN word. DATA: io_channel, receipt_timestamp, packet (p0..p7 are the
packet's bytes, packet_ts its bits 16-47). SYNC/TRIG: sub (sync or trigger type),
clk_source (SYNC), time."""

ERROR_KINDS = (
    "truncated_header",  # fewer than 8 bytes: nothing to decode
    "not_data_message",  # a request/reply (or garbage) where a data message belongs
    "truncated_word",  # trailing bytes that do not make a whole 16-byte word
    "word_count_mismatch",  # header word count disagrees with the bytes present
    "unknown_word_type",  # a word whose type is not D, S or T in a data message
)


@dataclass
class DecodeResult:
    """Rows decoded from a batch, and what was skipped, by kind (see ``ERROR_KINDS``)."""

    rows: np.ndarray
    errors: dict[str, int] = field(default_factory=dict)
    n_messages: int = 0
    n_words: int = 0

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())


def _count(errors: dict[str, int], kind: str, n: int = 1) -> None:
    if n:
        errors[kind] = errors.get(kind, 0) + int(n)


def decode_data_messages(
    messages: Sequence[bytes | bytearray | memoryview],
    io_groups: int | Sequence[int] | np.ndarray,
) -> DecodeResult:
    """Decode a batch of PACMAN data messages into ``packets`` rows (PACKETS_DTYPE).

    Each message gives one type-4 row (``timestamp`` = header UNIX seconds) followed by one
    row per word, in order: DATA words as chip rows (io_channel and receipt_timestamp from
    the word, every packet column filled from the packet bits), SYNC words as type-6 rows
    and TRIG words as type-7 rows. ``io_groups`` is one number for the whole batch or one
    per message (the board a message came from is not inside it).
    """
    n_in = len(messages)
    groups = np.broadcast_to(np.asarray(io_groups, dtype=np.uint8), (n_in,))
    errors: dict[str, int] = {}
    chunks: list[memoryview] = []
    kept_msgs: list[int] = []
    counts: list[int] = []
    times: list[int] = []
    for i, msg in enumerate(messages):
        size = len(msg)
        if size < HEADER_BYTES:
            _count(errors, "truncated_header")
            continue
        head = bytes(msg[:HEADER_BYTES])
        if head[0:1] != MSG_DATA:
            _count(errors, "not_data_message")
            continue
        n_words, extra = divmod(size - HEADER_BYTES, WORD_BYTES)
        if extra:
            _count(errors, "truncated_word")
        declared = head[6] | (head[7] << 8)
        if declared != n_words:
            _count(errors, "word_count_mismatch")
        kept_msgs.append(i)
        counts.append(n_words)
        times.append(int.from_bytes(head[1:5], "little"))
        if n_words:
            chunks.append(memoryview(msg)[HEADER_BYTES:HEADER_BYTES + n_words * WORD_BYTES])
    # One bytes join is a plain memcpy per message; numpy's concatenate of a structured
    # dtype costs far more per message.
    words = np.frombuffer(b"".join(chunks), dtype=WORD_DTYPE)
    msg_groups = groups[kept_msgs] if kept_msgs else np.zeros(0, np.uint8)
    return _rows_from_words(words, np.asarray(counts, dtype=np.int64),
                            np.asarray(times, dtype=np.uint64), msg_groups, errors, n_in)


def _rows_from_words(
    words: np.ndarray,
    counts: np.ndarray,
    times: np.ndarray,
    msg_groups: np.ndarray,
    errors: dict[str, int],
    n_in: int,
) -> DecodeResult:
    """Lay out the rows of messages whose words are concatenated in ``words``."""
    n_msgs = len(counts)
    wtype = words["type"]
    is_data = wtype == WORD_DATA
    timing = ~is_data
    if timing.any():
        known = is_data | (wtype == WORD_SYNC) | (wtype == WORD_TRIG)
        if not known.all():
            _count(errors, "unknown_word_type", np.count_nonzero(~known))
            owner = np.repeat(np.arange(n_msgs), counts)
            counts = np.bincount(owner[known], minlength=n_msgs).astype(np.int64)
            words = _take(words, known)
            wtype = wtype[known]
            timing = timing[known]
    n_words = len(words)
    out = np.zeros(n_msgs + n_words, dtype=R.PACKETS_DTYPE)
    # Row of each message's type-4 row: after all rows of the messages before it.
    msg_rows = np.arange(n_msgs, dtype=np.int64)
    if n_msgs:
        msg_rows[1:] += np.cumsum(counts[:-1])
    out["io_group"][msg_rows] = msg_groups
    out["packet_type"][msg_rows] = R.TIMESTAMP
    out["timestamp"][msg_rows] = times
    # Word j of the batch, in message k, sits after k + 1 type-4 rows.
    word_rows = np.arange(1, n_words + 1, dtype=np.int64)
    word_rows += np.repeat(np.arange(n_msgs, dtype=np.int64), counts)
    word_groups = np.repeat(msg_groups, counts)
    # Every word is first read as a DATA word (no selection, no copy); the few SYNC and
    # TRIG rows are then overwritten whole.
    _scatter_chip_rows(out, word_rows, words, word_groups)
    if timing.any():
        for kind, ptype in ((WORD_SYNC, R.SYNC), (WORD_TRIG, R.TRIGGER)):
            sel = wtype == kind
            if sel.any():
                out[word_rows[sel]] = _timing_rows(_take(words, sel), word_groups[sel], ptype)
    return DecodeResult(rows=out, errors=errors, n_messages=n_in, n_words=n_words)


def _take(words: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``words[mask]``, copied as plain 16-byte records: numpy selects a dtype with
    overlapping fields field by field, some fifty times slower."""
    return words.view(f"V{WORD_BYTES}")[mask].view(WORD_DTYPE)


BLOCK_ROWS = 65536
"""Chip rows are built in blocks this size, small enough to stay in the CPU cache while
some twenty passes run over them, then copied to their place in one scatter."""


def _scatter_chip_rows(
    out: np.ndarray, at: np.ndarray, words: np.ndarray, io_groups: np.ndarray
) -> None:
    """Write the chip rows of DATA ``words`` into ``out`` at rows ``at``."""
    n = len(words)
    block = np.zeros(min(n, BLOCK_ROWS), dtype=R.PACKETS_DTYPE)
    scratch = np.empty(len(block), dtype=np.uint8)
    flat_out = out.view(f"V{R.PACKETS_DTYPE.itemsize}")  # row copies as plain bytes
    for start in range(0, n, BLOCK_ROWS):
        stop = min(n, start + BLOCK_ROWS)
        rows = block[: stop - start]
        _fill_chip_rows(words[start:stop], io_groups[start:stop], rows, scratch[: stop - start])
        flat_out[at[start:stop]] = rows.view(flat_out.dtype)


def _fill_chip_rows(
    words: np.ndarray, io_groups: np.ndarray, rows: np.ndarray, tmp: np.ndarray
) -> None:
    """Fill chip-packet rows from DATA words with byte-wise ufuncs written in place.

    Every field is computed from the packet's bytes (uint8 shifts drop the high bits for
    free), never from 64-bit shifts, and written straight into its column. Columns the
    reference leaves at zero for chip packets (direction, FIFO events, counter, ...) are
    left as the caller's zeros.
    """
    p0, p1, p2, p3, p7 = words["p0"], words["p1"], words["p2"], words["p3"], words["p7"]
    rows["io_group"] = io_groups
    rows["io_channel"] = words["io_channel"]
    _bits_across(p0, p1, rows["chip_id"], tmp)
    np.bitwise_and(p0, 3, out=rows["packet_type"])
    np.right_shift(p7, 6, out=tmp)
    np.bitwise_and(tmp, 1, out=rows["downstream_marker"])
    np.right_shift(p7, 7, out=rows["parity"])
    np.bitwise_and(_popcount_u64(words["packet"]), 1, out=rows["valid_parity"])
    np.right_shift(p1, 2, out=rows["channel_id"])
    np.bitwise_and(words["packet_ts"], np.uint32(0x7FFFFFFF), out=rows["timestamp"],
                   casting="unsafe")
    rows["dataword"] = words["p6"]
    np.bitwise_and(p7, 3, out=rows["trigger_type"])
    np.right_shift(p7, 2, out=tmp)
    np.bitwise_and(tmp, 3, out=rows["local_fifo"])
    np.right_shift(p7, 4, out=tmp)
    np.bitwise_and(tmp, 3, out=rows["shared_fifo"])
    _bits_across(p1, p2, rows["register_address"], tmp)
    _bits_across(p2, p3, rows["register_data"], tmp)
    np.right_shift(words["p5"], 7, out=rows["first_packet"])
    rows["receipt_timestamp"] = words["receipt_timestamp"]


def _bits_across(low: np.ndarray, high: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """The 8 bits that start at bit 2 of byte ``low`` and run into byte ``high``."""
    np.right_shift(low, 2, out=out)
    np.left_shift(high, 6, out=tmp)
    np.bitwise_or(out, tmp, out=out)


def _timing_rows(words: np.ndarray, io_groups: np.ndarray, packet_type: int) -> np.ndarray:
    rows = np.zeros(len(words), dtype=R.PACKETS_DTYPE)
    rows["io_group"] = io_groups
    rows["packet_type"] = packet_type
    rows["timestamp"] = words["time"]
    rows["trigger_type"] = words["sub"]
    if packet_type == R.SYNC:
        rows["dataword"] = words["clk_source"] & 1
    return rows


if hasattr(np, "bitwise_count"):

    def _popcount_u64(x: np.ndarray) -> np.ndarray:
        return np.bitwise_count(x).astype(np.uint8)

else:  # numpy < 2.0
    from larpixdaq.formats.packets import popcount as _popcount_u64  # noqa: F401


# ---------------------------------------------------------------- building data messages


def data_words(
    io_channel: np.ndarray | int,
    packets: np.ndarray,
    receipt_timestamp: np.ndarray | int = 0,
) -> np.ndarray:
    """DATA words (WORD_DTYPE) carrying LArPix packets received on the given UARTs."""
    packets = np.asarray(packets, dtype=np.uint64)
    words = np.zeros(packets.shape[0], dtype=WORD_DTYPE)
    words["type"] = WORD_DATA
    words["io_channel"] = io_channel
    words["receipt_timestamp"] = receipt_timestamp
    words["packet"] = packets
    return words


def sync_words(
    timestamp: np.ndarray | int, sync_type: bytes = b"S", clk_source: int = 0, n: int | None = None
) -> np.ndarray:
    """SYNC words: ``S`` sync, ``H`` heartbeat or ``C`` clock switch."""
    ts = np.atleast_1d(np.asarray(timestamp, dtype=np.uint32))
    words = np.zeros(n if n is not None else ts.shape[0], dtype=WORD_DTYPE)
    words["type"] = WORD_SYNC
    words["sub"] = sync_type[0]
    words["clk_source"] = clk_source & 1
    words["time"] = ts
    return words


def trig_words(timestamp: np.ndarray | int, trigger_type: np.ndarray | int = 0) -> np.ndarray:
    """TRIG words: an external trigger seen by the board."""
    ts = np.atleast_1d(np.asarray(timestamp, dtype=np.uint32))
    words = np.zeros(ts.shape[0], dtype=WORD_DTYPE)
    words["type"] = WORD_TRIG
    words["sub"] = trigger_type
    words["time"] = ts
    return words


def concat_words(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate WORD_DTYPE arrays.

    Use this, not a bare ``np.concatenate``: numpy's type promotion rewrites a dtype with
    overlapping fields into a packed one (31 bytes), which is no longer a PACMAN word.
    """
    return np.concatenate(arrays, dtype=WORD_DTYPE) if len(arrays) else np.zeros(0, WORD_DTYPE)


def as_words(words: np.ndarray) -> np.ndarray:
    """``words`` as WORD_DTYPE: from an (n, 16) uint8 array, or from a structured array
    with the word fields in another layout (as a bare ``np.concatenate`` leaves them)."""
    words = np.asarray(words)
    if words.dtype == WORD_DTYPE:
        return words
    if words.dtype.names is not None and set(words.dtype.names) == set(WORD_DTYPE.names):
        return words.astype(WORD_DTYPE)
    if words.dtype == np.uint8 and words.ndim == 2 and words.shape[1] == WORD_BYTES:
        return np.ascontiguousarray(words).view(WORD_DTYPE).reshape(-1)
    raise FormatError(f"not PACMAN words: dtype {words.dtype}, shape {words.shape}")


def encode_data_message(timestamp: int, words: np.ndarray) -> bytes:
    """One ``D`` message holding ``words`` (WORD_DTYPE, at most 65535 of them)."""
    words = as_words(words)
    if len(words) > MAX_WORDS:
        raise FormatError(f"a message holds at most {MAX_WORDS} words, not {len(words)}")
    return HEADER.pack(MSG_DATA, int(timestamp) & 0xFFFFFFFF, len(words)) + words.tobytes()


def message_words(message: bytes) -> np.ndarray:
    """The whole words of one message as WORD_DTYPE (header ignored), a zero-copy view."""
    n = max(0, (len(message) - HEADER_BYTES) // WORD_BYTES)
    return np.frombuffer(message, dtype=WORD_DTYPE, count=n, offset=HEADER_BYTES)


def rows_to_messages(rows: np.ndarray, max_words: int = MAX_WORDS) -> list[bytes]:
    """Rebuild PACMAN ``D`` messages from ``packets`` rows of a v2.4 file.

    Each type-4 row starts a message (its timestamp is the message time); chip rows become
    DATA words (packet bits rebuilt from the columns), type-6/7 rows SYNC/TRIG words; type-5
    rows (logged text) are skipped. Rows before the first type-4 row form a message of time 0.
    Config packets come back with their unused bits zero (v2.4 rows do not keep them).
    The inverse of :func:`decode_data_messages` (a recorded file replayed as the board's
    messages).
    """
    ptype = rows["packet_type"]
    keep = ptype != R.MESSAGE
    rows, ptype = rows[keep], ptype[keep]
    starts = np.flatnonzero(ptype == R.TIMESTAMP)
    words_sel = ptype != R.TIMESTAMP
    words = np.zeros(int(words_sel.sum()), dtype=WORD_DTYPE)
    wr = rows[words_sel]
    wt = ptype[words_sel]
    chip = wt < R.TIMESTAMP
    if chip.any():
        c = wr[chip]
        data = c["packet_type"] == 0
        pk = np.zeros(len(c), np.uint64)
        if data.any():
            d = c[data]
            pk[data] = encode_packets(
                packet_type=0, chip_id=d["chip_id"], channel_id=d["channel_id"],
                timestamp=d["timestamp"] & 0x7FFFFFFF, first_packet=d["first_packet"],
                dataword=d["dataword"], trigger_type=d["trigger_type"],
                local_fifo=d["local_fifo"], shared_fifo=d["shared_fifo"],
                downstream_marker=d["downstream_marker"], parity=d["parity"])
        if (~data).any():
            g = c[~data]
            pk[~data] = encode_packets(
                packet_type=g["packet_type"], chip_id=g["chip_id"],
                register_address=g["register_address"], register_data=g["register_data"],
                downstream_marker=g["downstream_marker"], parity=g["parity"])
        cw = words[chip]
        cw["type"] = WORD_DATA
        cw["io_channel"] = c["io_channel"]
        cw["receipt_timestamp"] = c["receipt_timestamp"]
        cw["packet"] = pk
        words[chip] = cw
    for kind, code in ((R.SYNC, WORD_SYNC), (R.TRIGGER, WORD_TRIG)):
        sel = wt == kind
        if sel.any():
            tw = words[sel]
            tw["type"] = code
            tw["sub"] = wr["trigger_type"][sel]
            tw["time"] = wr["timestamp"][sel].astype(np.uint32)
            if kind == R.SYNC:
                tw["clk_source"] = wr["dataword"][sel] & 1
            words[sel] = tw
    # Word index where each message begins: rows before it that are words.
    word_pos = np.cumsum(words_sel) - words_sel
    bounds = [0, *word_pos[starts].tolist(), len(words)]
    stamps = [0, *rows["timestamp"][starts].tolist()]
    out = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        if i == 0 and a == b:
            continue  # no words before the first type-4 row
        for s in range(a, max(b, a + 1), max_words):
            out.append(encode_data_message(int(stamps[i]), words[s:min(b, s + max_words)]))
    return out


# ------------------------------------------------------------------- requests and replies


@dataclass(frozen=True)
class Ping:
    """PING in a request, PONG in a reply."""


@dataclass(frozen=True)
class Write:
    register: int
    value: int


@dataclass(frozen=True)
class Read:
    """A register read: the request carries value 0, the reply the value read."""

    register: int
    value: int = 0


@dataclass(frozen=True)
class Tx:
    """A LArPix packet sent to (request) or echoed for (reply) one UART."""

    io_channel: int
    packet: int


@dataclass(frozen=True)
class Err:
    """An error reply word; ``message`` holds at most 14 bytes."""

    code: int
    message: bytes = b""


ControlWord = Ping | Write | Read | Tx | Err

_REG_WORD = struct.Struct("<c3xL4xL")
_TX_WORD = struct.Struct("<cB6xQ")
_ERR_WORD = struct.Struct("<cB14s")


@dataclass(frozen=True)
class ControlMessage:
    """A decoded request (``kind`` ``?``) or reply (``kind`` ``!``)."""

    kind: bytes
    timestamp: int
    words: tuple[ControlWord, ...]


def encode_control_word(word: ControlWord) -> bytes:
    if isinstance(word, Ping):
        return WORD_PING + bytes(15)
    if isinstance(word, Write | Read):
        tag = WORD_WRITE if isinstance(word, Write) else WORD_READ
        _check_range("register", word.register, 32)
        _check_range("value", word.value, 32)
        return _REG_WORD.pack(tag, word.register, word.value)
    if isinstance(word, Tx):
        _check_range("io_channel", word.io_channel, 8)
        _check_range("packet", word.packet, 64)
        return _TX_WORD.pack(WORD_TX, word.io_channel, word.packet)
    if isinstance(word, Err):
        _check_range("code", word.code, 8)
        return _ERR_WORD.pack(WORD_ERR, word.code, bytes(word.message[:14]))
    raise FormatError(f"not a PACMAN control word: {word!r}")


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= int(value) < (1 << bits):
        raise FormatError(f"{name}={value} does not fit in {bits} bits")


def encode_control(
    kind: bytes, words: Sequence[ControlWord], timestamp: int = 0
) -> bytes:
    """A request (``?``) or reply (``!``) message stamped ``timestamp`` (UNIX seconds).

    The codec never reads the clock: a sender that stamps its messages (the board client)
    passes the time; without it the header says 0."""
    if kind not in (MSG_REQUEST, MSG_REPLY):
        raise FormatError(f"control messages are '?' or '!', not {kind!r}")
    if len(words) > MAX_WORDS:
        raise FormatError(f"a message holds at most {MAX_WORDS} words, not {len(words)}")
    return HEADER.pack(kind, int(timestamp) & 0xFFFFFFFF, len(words)) + b"".join(
        encode_control_word(w) for w in words
    )


def encode_request(words: Sequence[ControlWord], timestamp: int = 0) -> bytes:
    """A request message (see :func:`encode_control`)."""
    return encode_control(MSG_REQUEST, words, timestamp)


def encode_reply(words: Sequence[ControlWord], timestamp: int = 0) -> bytes:
    """A reply message (see :func:`encode_control`)."""
    return encode_control(MSG_REPLY, words, timestamp)


def decode_control_word(kind: bytes, raw: bytes) -> ControlWord:
    tag = raw[0:1]
    if tag == WORD_PING:
        return Ping()
    if tag in (WORD_WRITE, WORD_READ):
        _, register, value = _REG_WORD.unpack(raw)
        return Write(register, value) if tag == WORD_WRITE else Read(register, value)
    if tag == WORD_TX:
        _, channel, packet = _TX_WORD.unpack(raw)
        return Tx(channel, packet)
    if tag == WORD_ERR and kind == MSG_REPLY:
        _, code, message = _ERR_WORD.unpack(raw)
        return Err(code, message.rstrip(b"\0"))
    raise FormatError(f"unknown word type {tag!r} in a {kind.decode(errors='replace')!r} message")


def decode_control(message: bytes | bytearray | memoryview) -> ControlMessage:
    """Decode a request or reply; raise :class:`FormatError` saying what is malformed."""
    message = bytes(message)
    if len(message) < HEADER_BYTES:
        raise FormatError(f"message of {len(message)} bytes is shorter than the 8-byte header")
    kind, stamp, declared = HEADER.unpack_from(message)
    if kind not in (MSG_REQUEST, MSG_REPLY):
        raise FormatError(f"message type {kind!r} is not a request '?' or reply '!'")
    n_words, extra = divmod(len(message) - HEADER_BYTES, WORD_BYTES)
    if extra:
        raise FormatError(f"{extra} trailing bytes do not make a whole 16-byte word")
    if declared != n_words:
        raise FormatError(f"header says {declared} words but the message holds {n_words}")
    words = tuple(
        decode_control_word(kind, message[HEADER_BYTES + i * WORD_BYTES:][:WORD_BYTES])
        for i in range(n_words)
    )
    return ControlMessage(kind, stamp, words)


def message_kind(message: bytes | bytearray | memoryview) -> bytes:
    """The type byte of a message (``D``, ``?`` or ``!``), or ``b''`` if it is empty."""
    return bytes(message[:1])
