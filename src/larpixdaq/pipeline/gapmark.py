"""Where a board's data stops when its producer dies, and where it starts again.

A PACMAN board keeps sending while its producer is dead (its PUB socket drops what nobody
reads). What the producer had read is not lost (its frame log, see
:mod:`~larpixdaq.pipeline.framelog`, is sent again by its successor), but what the board sent
while no process read it is. A restarted producer (same name) cannot bring that back, but it
can say exactly where the hole is, so the file's reader knows: the last data message its
predecessor logged (its PACMAN message-header time, in UNIX seconds, and the last SYNC time
logged before it, in board clock ticks) starts the hole, and the first data message after
the restart ends it.

Pure functions: what a message says, where a log's data stops, the texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
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
    """The incident for spill files a dead process of this name left (kept; their frames
    are in its frame log too, and go again from there)."""
    return (f"{len(paths)} spill file(s) of a dead {name} kept on disk (their frames are "
            f"sent again from its frame log): {', '.join(p.name for p in paths)}")


def stale_text(name: str, frames: int, runs: list[int], paths: list[Path]) -> str:
    """The incident for frames a dead process of this name logged for runs that are over
    (storage no longer takes them): kept on disk, not sent."""
    return (f"{frames} frame(s) of run(s) {', '.join(map(str, runs))} that a dead {name} "
            f"logged and storage may not have: kept in {', '.join(p.name for p in paths)}")


def last_mark(data: Iterable[tuple[int, int, bytes]]) -> Mark | None:
    """Where a dead producer's data stops: the last of its logged data messages
    (``(run, io_group, payload)`` in the order logged), with the last SYNC time logged in
    the stretch of that run up to it (None: none). None if there is no data message."""
    last: tuple[int, int, bytes] | None = None
    sync: tuple[int, int] | None = None  # (run, time)
    for run, io_group, payload in data:
        if last is not None and last[0] != run:
            sync = None  # a SYNC of another run is not this one's
        last = (run, io_group, payload)
        _, s = message_marks(payload)
        if s is not None:
            sync = (run, s)
    if last is None:
        return None
    run, io_group, payload = last
    msg_time, _ = message_marks(payload)
    return Mark(run, io_group, msg_time, sync[1] if sync and sync[0] == run else None)


def gap_info(before: Mark, after_time: int, after_sync: int | None) -> str:
    """The same interval as an INFO text that fits the messages table (64 bytes)."""
    text = (f"gap {before.msg_time}-{after_time} SYNC {_sync(before.sync_time)}-"
            f"{_sync(after_sync)}")
    return text[:MAX_INFO_BYTES]
