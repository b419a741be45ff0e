"""A PACMAN board's data subscription as a producer's source (its configuration goes
through the board session, from actions and routines)."""

from __future__ import annotations

import threading

from larpixdaq.boards.session import BoardSession
from larpixdaq.pipeline.sources import Source


class PacmanSource(Source):
    """A PACMAN board (or the emulator) through the PACMAN client."""

    runs_on_its_own = True

    def __init__(self, io_group: int, host: str = "127.0.0.1", cmd_port: int = 5555,
                 data_port: int = 5556) -> None:
        from larpixdaq.boards.pacman_client import PacmanClient

        self.io_group = io_group
        self.client = PacmanClient(io_group, host, cmd_port, data_port)
        # The client's sockets are shared with configuration actions (another thread).
        self.lock = threading.RLock()

    def start(self) -> None:
        with self.lock:
            self.client.start_data()

    def stop(self) -> None:
        with self.lock:
            self.client.stop_data()

    def read(self, wait: float) -> list[bytes]:
        with self.lock:
            return self.client.recv_messages(timeout=wait)

    def close(self) -> None:
        self.client.close()

    def session(self) -> BoardSession:
        return BoardSession(self.client, self.io_group, kind="pacman", lock=self.lock)
