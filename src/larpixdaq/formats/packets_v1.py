"""LArPix v1 packets: 54-bit words sent as 7 little-endian bytes, for whole arrays at once.

The v1 chip predates hydra networks: no downstream marker, a 24-bit timestamp, a 10-bit
ADC word and one FIFO half/full flag pair. Parity is odd over all 54 bits, as in v2. Words
are held in uint64 arrays (the top 10 bits zero), so the same numpy code paths apply.
"""

from __future__ import annotations

import numpy as np

from larpixdaq.errors import FormatError
from larpixdaq.formats.packets import Field, pack_fields, popcount

PACKET_BYTES = 7
WORD_BITS = 54

DATA, TEST, CONFIG_WRITE, CONFIG_READ = 0, 1, 2, 3

FIELDS: dict[str, Field] = {
    "packet_type": Field(0, 2),
    "chip_id": Field(2, 8),
    "channel_id": Field(10, 7),
    "timestamp": Field(17, 24),
    "dataword": Field(41, 10),
    "fifo_half_flag": Field(51, 1),
    "fifo_full_flag": Field(52, 1),
    "register_address": Field(10, 8),
    "register_data": Field(18, 8),
    "parity": Field(53, 1),
}
"""Bit layout of the v1 fields; data and register fields overlap, as in v2."""

DATA_FIELDS = ("channel_id", "timestamp", "dataword", "fifo_half_flag", "fifo_full_flag")
CONFIG_FIELDS = ("register_address", "register_data")
_LOW53 = np.uint64((1 << 53) - 1)
_ALL54 = np.uint64((1 << WORD_BITS) - 1)


def valid_parity(words: np.ndarray) -> np.ndarray:
    """True where a 54-bit word has odd parity."""
    w = np.asarray(words, dtype=np.uint64) & _ALL54
    return (popcount(w) & 1).astype(bool)


def with_parity(words: np.ndarray) -> np.ndarray:
    """Words with bit 53 set to the odd-parity bit of bits 0..52."""
    low = np.asarray(words, dtype=np.uint64) & _LOW53
    return low | ((1 - (popcount(low) & 1)).astype(np.uint64) << np.uint64(53))


def decode_fields(words: np.ndarray) -> dict[str, np.ndarray]:
    """Every v1 field of every word (uint64 arrays), plus ``valid_parity`` (bool)."""
    w = np.asarray(words, dtype=np.uint64)
    out = {name: (w >> np.uint64(f.start)) & np.uint64(f.mask) for name, f in FIELDS.items()}
    out["valid_parity"] = valid_parity(w)
    return out


def encode_packets(**fields: np.ndarray | int) -> np.ndarray:
    """v1 words from field arrays (broadcast together); parity computed unless given.

    Unknown names, values that do not fit and a mix of data and register fields raise
    :class:`FormatError` naming the field.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise FormatError(f"unknown v1 packet field(s) {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(FIELDS)}")
    given = {k: v for k, v in fields.items() if v is not None}
    word = pack_fields(FIELDS, given, DATA_FIELDS, CONFIG_FIELDS)
    return word if "parity" in given else with_parity(word)


def to_bytes(words: np.ndarray) -> bytes:
    """The wire bytes: 7 little-endian bytes a word."""
    w = np.ascontiguousarray(np.atleast_1d(words), dtype="<u8")
    if np.any(w >> np.uint64(WORD_BITS)):
        raise FormatError("a v1 packet has 54 bits; a word has bits set above bit 53")
    return w.view(np.uint8).reshape(-1, 8)[:, :PACKET_BYTES].tobytes()


def from_bytes(data: bytes | bytearray | memoryview) -> np.ndarray:
    """Words from wire bytes; the length must be a multiple of 7."""
    if len(data) % PACKET_BYTES:
        raise FormatError(f"{len(data)} bytes is not a whole number of 7-byte v1 packets")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, PACKET_BYTES)
    padded = np.zeros((len(raw), 8), dtype=np.uint8)
    padded[:, :PACKET_BYTES] = raw
    words = padded.view("<u8").reshape(-1).astype(np.uint64)
    if np.any(words >> np.uint64(WORD_BITS)):
        raise FormatError("a v1 packet has 54 bits; its last byte has bits set above bit 53")
    return words
