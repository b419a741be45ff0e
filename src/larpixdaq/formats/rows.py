"""The numpy row layouts of the LArPix+HDF5 v2.4 file, shared by every codec and writer.

These dtypes are the file format: field order, widths and packing must match what the
field's reference reader expects byte for byte (36-byte ``packets`` rows, 76-byte
``messages`` rows, 250-byte ``configs`` rows).
"""

from __future__ import annotations

import numpy as np

FILE_VERSION = "2.4"

PACKETS_DTYPE = np.dtype(
    [
        ("io_group", "u1"),
        ("io_channel", "u1"),
        ("chip_id", "u1"),
        ("packet_type", "u1"),
        ("downstream_marker", "u1"),
        ("parity", "u1"),
        ("valid_parity", "u1"),
        ("channel_id", "u1"),
        ("timestamp", "<u8"),
        ("dataword", "u1"),
        ("trigger_type", "u1"),
        ("local_fifo", "u1"),
        ("shared_fifo", "u1"),
        ("register_address", "u1"),
        ("register_data", "u1"),
        ("direction", "u1"),
        ("local_fifo_events", "u1"),
        ("shared_fifo_events", "<u2"),
        ("counter", "<u4"),
        ("fifo_diagnostics_enabled", "u1"),
        ("first_packet", "u1"),
        ("receipt_timestamp", "<u4"),
    ]
)
assert PACKETS_DTYPE.itemsize == 36

MESSAGES_DTYPE = np.dtype([("message", "S64"), ("timestamp", "<u8"), ("index", "<u4")])

MESSAGE_BYTES = MESSAGES_DTYPE["message"].itemsize
"""A ``messages`` row keeps this many bytes of a text."""


def message_text(raw: bytes) -> tuple[str, bool]:
    """The text a ``messages`` row keeps of ``raw`` (UTF-8, cut to :data:`MESSAGE_BYTES`
    bytes at a character boundary, undecodable bytes dropped), and whether anything of
    ``raw`` was lost, so a writer can count it."""
    text = raw[:MESSAGE_BYTES].decode("utf-8", "ignore")
    return text, len(text.encode("utf-8")) != len(raw)

CONFIG_REGISTERS = 239
"""Width of the ``registers`` column: large enough for LightPix v1 (239), v2 uses 237."""

CONFIGS_DTYPE = np.dtype(
    [
        ("timestamp", "<u8"),
        ("io_group", "u1"),
        ("io_channel", "u1"),
        ("chip_id", "u1"),
        ("registers", "u1", (CONFIG_REGISTERS,)),
    ]
)

# packet_type values of the packets table
DATA, TEST, CONFIG_WRITE, CONFIG_READ, TIMESTAMP, MESSAGE, SYNC, TRIGGER = range(8)
PACKET_TYPE_NAMES = {
    DATA: "data",
    TEST: "test",
    CONFIG_WRITE: "config_write",
    CONFIG_READ: "config_read",
    TIMESTAMP: "timestamp",
    MESSAGE: "message",
    SYNC: "sync",
    TRIGGER: "trigger",
}


def configs_hash(rows: np.ndarray) -> str | None:
    """SHA-256 (hex) of the configuration a ``configs`` table starts with: the first row of
    each chip, in chip-key order, chip key and registers only (not the time it was taken).

    A run file holds the chips' configuration at the start and again at the end; hashing the
    first row per chip names the configuration the run was taken with, so two runs with the
    same hash had the same registers on the same chips. None for a table without rows.
    """
    import hashlib

    if len(rows) == 0:
        return None
    key = (rows["io_group"].astype(np.uint32) << 16 | rows["io_channel"].astype(np.uint32) << 8
           | rows["chip_id"].astype(np.uint32))
    _, first = np.unique(key, return_index=True)  # sorted by key; first occurrence of each
    chosen = rows[first]
    digest = hashlib.sha256()
    # Column by column: a multi-field view would carry the other fields' bytes (the time).
    ids = np.stack([chosen["io_group"], chosen["io_channel"], chosen["chip_id"]], axis=1)
    digest.update(np.ascontiguousarray(ids, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(chosen["registers"]).tobytes())
    return digest.hexdigest()
