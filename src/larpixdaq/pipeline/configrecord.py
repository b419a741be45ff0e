"""The configuration of record: what a producer last wrote to its board's chips, on disk.

A producer that restarts (killed, crashed, restarted by the supervisor) begins with a fresh
board session, and a simulated board (or a PACMAN whose chips were power-cycled) at power-on
values. Without a record the new process would not know what the chips should hold, and a
``verify`` would compare power-on values with power-on values and say all is well. So every
configuration write that succeeds updates the record of the chips written, and a producer
that starts with a record re-applies it and verifies it.

The record is one JSON file per producer in ``DATA_DIR/configuration/``: ``{"version": 1,
"io_group": N, "chips": {chip_key: hex of the 237 register bytes}}``. It is written
atomically (a temporary file beside it, fsync, rename, fsync of the directory), so a crash
while writing leaves either the old record or the new one, never a torn one. A record that
cannot be read is an error with the reason (:class:`ConfigRecordError`), never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from larpixdaq.errors import LarpixDaqError
from larpixdaq.pipeline.durable import write_atomically

CONFIG_RECORD_DIR = "configuration"
"""Where in a producer's data directory its configuration of record is kept."""

VERSION = 1


class ConfigRecordError(LarpixDaqError):
    """The configuration of record cannot be read or written (the message says why)."""


def record_path(directory: str | Path, name: str) -> Path:
    """The record of the producer named ``name`` in ``directory``."""
    return Path(directory) / f"{name}.json"


def load_record(path: str | Path) -> dict[str, np.ndarray]:
    """``{chip_key: uint8 registers}`` from the record at ``path``; ``{}`` if there is none."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigRecordError(f"cannot read the configuration of record {path}: "
                                f"{exc.strerror or exc}") from None
    try:
        data = json.loads(text)
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, not {VERSION}")
        return {str(k): np.frombuffer(bytes.fromhex(v), dtype=np.uint8).copy()
                for k, v in data["chips"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigRecordError(f"the configuration of record {path} is not readable "
                                f"({exc}); move it away to start from the chips' defaults"
                                ) from None


def save_record(path: str | Path, io_group: int, chips: Mapping[str, np.ndarray]) -> None:
    """Write the whole record atomically (see the module docstring)."""
    path = Path(path)
    body = json.dumps({"version": VERSION, "io_group": int(io_group),
                       "chips": {k: bytes(np.asarray(v, dtype=np.uint8)).hex()
                                 for k, v in sorted(chips.items())}}, indent=1)
    try:
        write_atomically(path, body)
    except OSError as exc:
        raise ConfigRecordError(f"cannot write the configuration of record {path}: "
                                f"{exc.strerror or exc}") from None


def update_record(path: str | Path, io_group: int,
                  written: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Merge the chips just ``written`` into the record and save it; returns the record."""
    chips = load_record(path)
    chips.update({k: np.asarray(v, dtype=np.uint8).copy() for k, v in written.items()})
    save_record(path, io_group, chips)
    return chips
