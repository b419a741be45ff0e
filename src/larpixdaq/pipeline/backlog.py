"""What a producer has framed and not yet sent: in memory up to a budget, then on local disk.

A PACMAN board cannot be slowed down (its PUB socket drops what its reader does not take),
so while the aggregator or storage is down or slow the producer keeps reading its board and
keeps the frames here. Up to ``memory_bytes`` of payload stay in memory; beyond that every
new frame is appended to a spill file (``spill-<name>-<pid>.bin`` in the spill directory) until
the file has been read back, so the frames leave in the order they were framed. A frame
read back from the file is counted as replayed; a drained spill file is removed.

Spill record: the frame log's (:mod:`~larpixdaq.pipeline.framelog`: the two lengths, the
frame header's msgpack bytes, the payload), appended and never rewritten. A write error (a
full disk) keeps the frame in memory over the budget and is counted in ``spill_errors``:
memory is the last place a frame can wait, not the floor.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from larpixdaq.pipeline.framelog import RECORD, pack_record

DEFAULT_HOLD_BYTES = 256 << 20
"""Payload a producer keeps in memory while it cannot send; beyond it, frames spill to disk."""


@dataclass(slots=True)
class Pending:
    """One framed frame waiting to be sent: its stream position and its two parts."""

    epoch: int
    seq: int
    header: bytes
    payload: bytes
    words: int = 0


class Backlog:
    """Frames waiting to be sent, oldest first (see the module docstring)."""

    def __init__(self, memory_bytes: int, spill_dir: str | Path | None, name: str) -> None:
        self.memory_bytes = int(memory_bytes)
        self.spill_path = (Path(spill_dir) / f"spill-{name}-{os.getpid()}.bin"
                           if spill_dir else None)
        self._mem: deque[Pending] = deque()
        self.mem_bytes = 0
        self._spill_file = None
        self._read_at = 0
        self._spilled_now = 0  # frames in the file not yet read back
        self._meta: deque[tuple[int, int, int]] = deque()  # their epoch, seq, words
        self.frames_spilled = 0
        self.bytes_spilled = 0
        self.frames_replayed = 0
        self.spill_errors = 0
        self.max_bytes_held = 0

    def __len__(self) -> int:
        return len(self._mem) + self._spilled_now

    @property
    def spilling(self) -> bool:
        return self._spilled_now > 0

    def push(self, item: Pending) -> None:
        """Queue a new frame behind every other."""
        size = len(item.payload)
        over = self.spilling or (self.mem_bytes + size > self.memory_bytes and self._mem)
        if over and self._spill(item):
            return
        if self.spilling:  # the file takes no more: all of it back first, to keep the order
            self._read_back(budget=1 << 62)
        self._mem.append(item)
        self.mem_bytes += size
        self.max_bytes_held = max(self.max_bytes_held, self.mem_bytes)

    def push_front(self, items: list[Pending]) -> None:
        """Put frames back in front of every other, in their order (frames to send again)."""
        for item in reversed(items):
            self._mem.appendleft(item)
            self.mem_bytes += len(item.payload)
        self.max_bytes_held = max(self.max_bytes_held, self.mem_bytes)

    def peek(self) -> Pending | None:
        """The oldest frame, reading spilled frames back when memory has none."""
        if not self._mem and self._spilled_now:
            self._read_back()
        return self._mem[0] if self._mem else None

    def pop(self) -> Pending:
        item = self._mem.popleft()
        self.mem_bytes -= len(item.payload)
        return item

    def drain(self) -> list[Pending]:
        """Every frame still waiting, in order (the producer is going away)."""
        out = []
        while self.peek() is not None:
            out.append(self.pop())
        return out

    # -- the spill file ----------------------------------------------------------------------
    def _spill(self, item: Pending) -> bool:
        if self.spill_path is None:
            return False
        try:
            if self._spill_file is None:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                # Created exclusively: a file another process left is never touched.
                self._spill_file = open(self.spill_path, "x+b")  # noqa: SIM115
                self._read_at = 0
            f = self._spill_file
            f.seek(0, os.SEEK_END)
            f.write(pack_record(item.header, item.payload))
            f.write(item.header)
            f.write(item.payload)
        except OSError:
            self.spill_errors += 1
            return False
        self._spilled_now += 1
        self.frames_spilled += 1
        self.bytes_spilled += len(item.payload)
        self._meta.append((item.epoch, item.seq, item.words))
        return True

    def _read_back(self, budget: int | None = None) -> None:
        """Move spilled frames back to memory, oldest first, about a quarter budget at once."""
        f = self._spill_file
        assert f is not None
        f.flush()
        budget = budget or max(1, self.memory_bytes // 4)
        f.seek(self._read_at)
        got = 0
        while self._spilled_now and got < budget:
            hlen, plen = RECORD.unpack(f.read(RECORD.size))
            header = f.read(hlen)
            payload = f.read(plen)
            epoch, seq, words = self._meta.popleft()
            self._mem.append(Pending(epoch, seq, header, payload, words))
            self.mem_bytes += plen
            got += plen
            self._spilled_now -= 1
            self.frames_replayed += 1
        self._read_at = f.tell()
        if not self._spilled_now:
            f.close()
            self._spill_file = None
            assert self.spill_path is not None
            self.spill_path.unlink(missing_ok=True)
            self._read_at = 0

    def close(self) -> None:
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None
