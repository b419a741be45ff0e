"""LArPix v2 packets: 64-bit words <-> named fields, for whole arrays at once.

A packet is a little-endian 64-bit word. Every function here takes and returns numpy
arrays so that no per-packet Python code runs on the data path; scalars work too, as
0-d arrays. Parity is *odd*: bit 63 is chosen so the whole word has an odd number of set
bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from larpixdaq.errors import FormatError

PACKET_BYTES = 8

DATA, TEST, CONFIG_WRITE, CONFIG_READ = 0, 1, 2, 3


class Field(NamedTuple):
    start: int
    width: int

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1


FIELDS: dict[str, Field] = {
    "packet_type": Field(0, 2),
    "chip_id": Field(2, 8),
    "channel_id": Field(10, 6),
    "timestamp": Field(16, 31),
    "first_packet": Field(47, 1),
    "dataword": Field(48, 8),
    "trigger_type": Field(56, 2),
    "local_fifo": Field(58, 2),
    "shared_fifo": Field(60, 2),
    "register_address": Field(10, 8),
    "register_data": Field(18, 8),
    "downstream_marker": Field(62, 1),
    "parity": Field(63, 1),
}
"""Bit layout of every named field. Data and config fields overlap on purpose: the file
format fills every column from the bits whatever the packet type."""

DATA_FIELDS = ("channel_id", "timestamp", "first_packet", "dataword", "trigger_type",
               "local_fifo", "shared_fifo")
CONFIG_FIELDS = ("register_address", "register_data")

_PARITY_BIT = np.uint64(1 << 63)
_LOW63 = np.uint64((1 << 63) - 1)

if hasattr(np, "bitwise_count"):

    def popcount(words: np.ndarray) -> np.ndarray:
        """Number of set bits of each 64-bit word."""
        return np.bitwise_count(np.asarray(words, dtype=np.uint64))

else:  # numpy < 2.0
    _BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def popcount(words: np.ndarray) -> np.ndarray:
        """Number of set bits of each 64-bit word."""
        w = np.ascontiguousarray(words, dtype="<u8")
        return _BYTE_POPCOUNT[w.view(np.uint8).reshape(*w.shape, 8)].sum(axis=-1, dtype=np.uint8)


def valid_parity(words: np.ndarray) -> np.ndarray:
    """True where a word has odd parity, as every packet on the wire should."""
    return (popcount(words) & 1).astype(bool)


def parity_bit(words: np.ndarray) -> np.ndarray:
    """The bit 63 that gives odd parity to bits 0..62 of each word."""
    low = np.asarray(words, dtype=np.uint64) & _LOW63
    return (1 - (popcount(low) & 1)).astype(np.uint64)


def with_parity(words: np.ndarray) -> np.ndarray:
    """Words with bit 63 set to the odd-parity bit of bits 0..62."""
    low = np.asarray(words, dtype=np.uint64) & _LOW63
    return low | (parity_bit(low) << np.uint64(63))


def get_field(words: np.ndarray, name: str) -> np.ndarray:
    """One named field of every word, as uint64."""
    f = _field(name)
    return (np.asarray(words, dtype=np.uint64) >> np.uint64(f.start)) & np.uint64(f.mask)


def decode_fields(words: np.ndarray) -> dict[str, np.ndarray]:
    """Every named field of every word (uint64 arrays), plus ``valid_parity`` (bool)."""
    w = np.asarray(words, dtype=np.uint64)
    out = {name: get_field(w, name) for name in FIELDS}
    out["valid_parity"] = valid_parity(w)
    return out


def encode_packets(
    *,
    packet_type: np.ndarray | int,
    chip_id: np.ndarray | int,
    channel_id: np.ndarray | int | None = None,
    timestamp: np.ndarray | int | None = None,
    first_packet: np.ndarray | int | None = None,
    dataword: np.ndarray | int | None = None,
    trigger_type: np.ndarray | int | None = None,
    local_fifo: np.ndarray | int | None = None,
    shared_fifo: np.ndarray | int | None = None,
    register_address: np.ndarray | int | None = None,
    register_data: np.ndarray | int | None = None,
    downstream_marker: np.ndarray | int = 0,
    parity: np.ndarray | int | None = None,
) -> np.ndarray:
    """Build packets from field arrays (broadcast together); parity is computed if not given.

    Data fields and config fields share bits, so giving both kinds raises. A value that
    does not fit its field raises :class:`FormatError` naming the field, rather than being
    silently truncated into a neighbouring field.
    """
    given = {k: v for k, v in locals().items() if k in FIELDS and v is not None}
    word = pack_fields(FIELDS, given, DATA_FIELDS, CONFIG_FIELDS)
    return word if "parity" in given else with_parity(word)


def pack_fields(
    table: dict[str, Field],
    given: dict[str, np.ndarray | int],
    data_fields: tuple[str, ...],
    config_fields: tuple[str, ...],
) -> np.ndarray:
    """OR field values (broadcast together) into words by ``table``, refusing what does not
    fit rather than letting it spill into a neighbouring field; shared by every packet
    version. A ``parity`` value, if given, is placed like any field."""
    if not given:
        raise FormatError("no fields given")
    if any(k in given for k in data_fields) and any(k in given for k in config_fields):
        raise FormatError("a packet has either data fields or register fields, not both")
    broadcast = np.broadcast_arrays(*(np.asarray(v) for v in given.values()))
    word = np.zeros(broadcast[0].shape, dtype=np.uint64)
    for name, value in zip(given, broadcast, strict=True):
        f = table[name]
        v = value.astype(np.int64) if value.dtype.kind in "iub" else value
        if v.size and (np.any(v < 0) or np.any(v > f.mask)):
            if name == "parity":
                raise FormatError("parity must be 0 or 1")
            bad = v[(v < 0) | (v > f.mask)].ravel()[0]
            raise FormatError(f"{name}={bad} does not fit in {f.width} bits (0..{f.mask})")
        word |= v.astype(np.uint64) << np.uint64(f.start)
    return word


def to_bytes(words: np.ndarray) -> bytes:
    """The wire bytes of packets (8 bytes each, little-endian)."""
    return np.asarray(words, dtype="<u8").tobytes()


def from_bytes(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Packets from wire bytes; the length must be a multiple of 8."""
    if len(data) % PACKET_BYTES:
        raise FormatError(f"{len(data)} bytes is not a whole number of 8-byte packets")
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def _field(name: str) -> Field:
    try:
        return FIELDS[name]
    except KeyError:
        raise FormatError(f"unknown packet field {name!r}; known: {', '.join(FIELDS)}") from None
