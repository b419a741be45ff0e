"""A recorded file played back as a producer's source: a raw message file, or a
LArPix+HDF5 v2.4 file turned back into the board's messages, at ``speed`` times real time
(0: as fast as possible). A file has no board: its session says so, and its data ignores
any configuration."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from larpixdaq.boards.session import BoardSession
from larpixdaq.pipeline.sources import Source


class ReplaySource(Source):
    """A recorded file played back (raw message file or LArPix+HDF5 v2.4)."""

    def __init__(self, path: str | Path, io_group: int = 1, *, speed: float = 0.0,
                 loop: bool = False) -> None:
        from larpixdaq.formats.rawfile import is_raw_file

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"replay file {self.path} does not exist")
        self.io_group = io_group
        self.speed = float(speed)
        self.runs_on_its_own = self.speed > 0
        self.loop = loop
        self._raw = is_raw_file(self.path)
        self._iter: Any = None
        self._t0_wall = 0.0
        self._t0_data: float | None = None
        self.finished = False
        self.lock = threading.RLock()  # nothing shares a file; there for the interface

    def start(self) -> None:
        self._iter = self._messages()
        self._t0_wall = time.monotonic()
        self._t0_data = None
        self.finished = False

    def stop(self) -> None:
        self._iter = None

    def _messages(self) -> Any:
        while True:
            if self._raw:
                from larpixdaq.formats.rawfile import open_raw

                with open_raw(self.path) as f:
                    for msgs, _ in f.iter_chunks(256):
                        yield msgs
            else:
                from larpixdaq.formats.hdf5file import open_file
                from larpixdaq.formats.pacman import rows_to_messages

                with open_file(self.path) as f:
                    for rows in f.iter_packets(1 << 16):
                        yield rows_to_messages(rows)
            if not self.loop:
                return

    def read(self, wait: float) -> list[bytes]:
        if self._iter is None or self.finished:
            time.sleep(wait)
            return []
        try:
            msgs = next(self._iter)
        except StopIteration:
            self.finished = True
            return []
        if self.speed > 0 and msgs:
            stamp = int.from_bytes(msgs[-1][1:5], "little")
            if self._t0_data is None:
                self._t0_data = stamp
            due = self._t0_wall + (stamp - self._t0_data) / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return msgs

    def close(self) -> None:
        self._iter = None

    def session(self) -> BoardSession:
        return BoardSession(None, self.io_group, kind="replay")

    def ignores_configuration(self, run_number: int) -> str | None:
        return f"run {run_number} replays a file, whose data ignores the configuration"
