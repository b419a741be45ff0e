"""Where a board's data stops when its producer dies, and where it starts again.

A PACMAN board keeps sending while its producer is dead (its PUB socket drops what nobody
reads), and a producer that is killed loses what it had read and storage had not
committed. A restarted producer (same name) cannot bring that data back, but it can say
exactly where the hole is, so the file's reader knows: the last message storage
acknowledged before the death (its PACMAN message-header time, in UNIX seconds, and the
last SYNC time seen in it, in board clock ticks) is kept in a small state file in the data
directory (``producer-<name>.state``, JSON, written atomically, at most once a second), and
the first data message after the restart gives the other end.

Pure functions here (what a message says, the texts); :func:`write_mark` and
:func:`read_mark` are the thin file shell.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from larpixdaq.formats.pacman import HEADER, HEADER_BYTES, WORD_BYTES, WORD_DTYPE, WORD_SYNC

MAX_INFO_BYTES = 64
"""What the run file's messages table keeps of an INFO text (storage truncates beyond)."""


@dataclass(frozen=True)
class Mark:
    """One end of a hole: the run, the board, the message time and the last SYNC time."""

    run: int
    io_group: int
    msg_time: int  # the PACMAN message header's timestamp (UNIX seconds)
    sync_time: int | None  # the last SYNC word's time in the message (board clock ticks)


def message_marks(payload: bytes) -> tuple[int, int | None]:
    """A PACMAN data message's header time and its last SYNC word's time (None: none).

    One numpy pass over the message's words, no loop per word."""
    if len(payload) < HEADER_BYTES:
        return 0, None
    _, msg_time, _ = HEADER.unpack_from(payload)
    n = (len(payload) - HEADER_BYTES) // WORD_BYTES
    words = np.frombuffer(payload, WORD_DTYPE, count=n, offset=HEADER_BYTES)
    syncs = np.flatnonzero(words["type"] == WORD_SYNC)
    return int(msg_time), (int(words["time"][syncs[-1]]) if len(syncs) else None)


def first_sync(payloads: list[bytes]) -> int | None:
    """The first SYNC time in ``payloads`` (the first data after a restart), or None."""
    for payload in payloads:
        n = (len(payload) - HEADER_BYTES) // WORD_BYTES
        if n <= 0:
            continue
        words = np.frombuffer(payload, WORD_DTYPE, count=n, offset=HEADER_BYTES)
        syncs = np.flatnonzero(words["type"] == WORD_SYNC)
        if len(syncs):
            return int(words["time"][syncs[0]])
    return None


def _sync(value: int | None) -> str:
    return "none" if value is None else str(value)


def gap_text(name: str, before: Mark, after_time: int, after_sync: int | None) -> str:
    """The incident: who, which io_group, the interval in UNIX time and in SYNC units."""
    text = (f"data gap: {name} died and was restarted; io_group {before.io_group} has no data "
            f"from message time {before.msg_time} to {after_time} (unix s, "
            f"{after_time - before.msg_time} s), SYNC {_sync(before.sync_time)} to "
            f"{_sync(after_sync)} (last SYNC before, first after)")
    return text


_GAP = re.compile(r"io_group (\d+) has no data from message time (\d+) to (\d+) \(unix s")


def gap_interval(text: str) -> tuple[int, int, int] | None:
    """(io_group, T0, T1) of an incident :func:`gap_text` made, or None for any other text:
    the one reader of that text, so a check of the files against a board's output (which
    messages may be missing) follows the text if it changes."""
    m = _GAP.search(text)
    return None if m is None else (int(m[1]), int(m[2]), int(m[3]))


def orphan_text(name: str, paths: list[Path]) -> str:
    """The incident for spill files a dead process of this name left (kept, not replayed)."""
    return (f"{len(paths)} spill file(s) of a dead {name} kept on disk, not replayed "
            f"(their frames are of the dead process's stream): "
            f"{', '.join(p.name for p in paths)}")


def gap_info(before: Mark, after_time: int, after_sync: int | None) -> str:
    """The same interval as an INFO text that fits the messages table (64 bytes)."""
    text = (f"gap {before.msg_time}-{after_time} SYNC {_sync(before.sync_time)}-"
            f"{_sync(after_sync)}")
    return text[:MAX_INFO_BYTES]


def state_path(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / f"producer-{name}.state"


def write_mark(path: Path, mark: Mark) -> None:
    """Replace the state file atomically (a kill mid-write leaves the previous one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(mark)))
    os.replace(tmp, path)


def read_mark(path: Path) -> Mark | None:
    """The mark a previous process left, or None (none, or unreadable: said by the caller)."""
    try:
        d = json.loads(path.read_text())
        return Mark(int(d["run"]), int(d["io_group"]), int(d["msg_time"]),
                    None if d.get("sync_time") is None else int(d["sync_time"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
