"""A simulated board driven through the PACMAN client's own code, in this process.

:class:`SimBoardClient` is a :class:`~larpixdaq.boards.pacman_client.PacmanClient` whose
two sockets are replaced by direct calls: a request message is answered by the PACMAN
emulator's request handler on the :class:`~larpixdaq.boards.simboard.SimulatedBoard`
(no network, no thread), and the "data subscription" advances the board's simulated time
and hands out the messages it produced. Everything above that (bring-up, bulk
configuration writes, config reads picked out of the data stream, verification) is the
client's unchanged code, so configuring a simulated board exercises the very path that
configures a real PACMAN.

The board is not thread-safe; every call into it holds ``lock`` (shared with whoever else
reads the board, e.g. the producer's data loop) for one short step only.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from larpixdaq.boards.pacman_client import PacmanClient
from larpixdaq.formats import pacman as P

STEP_SECONDS = 1e-3
"""Simulated time one poll of the data side advances: far more than a reply's latency."""
COLLECT_CHUNK = 0.05
"""Longest stretch of simulated time generated while holding the lock."""


class _SimSubscription:
    """What the client needs of its SUB socket: ``poll``, ``recv`` and ``setsockopt``."""

    def __init__(self, owner: SimBoardClient) -> None:
        self._owner = owner
        self._queue: deque[bytes] = deque()

    def setsockopt(self, *_: Any) -> None:
        pass

    def poll(self, timeout_ms: int = 0) -> bool:
        if self._queue:
            return True
        if timeout_ms <= 0:
            return False
        msg = self._owner._step(STEP_SECONDS)
        if msg is not None:
            self._queue.append(msg)
            return True
        time.sleep(min(timeout_ms / 1000.0, STEP_SECONDS))
        return False

    def recv(self, *_: Any) -> bytes:
        return self._queue.popleft()

    def close(self, *_: Any, **__: Any) -> None:
        self._queue.clear()


class SimBoardClient(PacmanClient):
    """The PACMAN client's operations on an in-process simulated board (see module doc)."""

    def __init__(self, board: Any, lock: threading.Lock | threading.RLock | None = None,
                 timeout: float = 1.0, retries: int = 3,
                 on_message: Callable[[bytes], None] | None = None) -> None:
        from larpixdaq.boards.pacman_emulator import PacmanEmulator

        self.board = board
        self.lock = lock if lock is not None else threading.RLock()
        self.io_group = int(board.io_group)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.name = f"simulated board io_group {self.io_group}"
        self.counters: Counter[str] = Counter()
        self._handler = PacmanEmulator(board)
        self._own_ctx = False
        self._ctx = None
        self._cmd = None
        self._sub = _SimSubscription(self)  # type: ignore[assignment]
        self._subscribed = False
        self._data_on = False
        self._stash: list[bytes] = []
        # Whatever the board sends while this client advances its time (config-read
        # replies, physics meanwhile) is also the board's data: a real PACMAN publishes it
        # to the producer's subscription too. ``on_message`` hands it to the data path.
        self.on_message = on_message

    def __repr__(self) -> str:
        return f"SimBoardClient({self.name})"

    def close(self) -> None:
        self._sub.close()

    def request_bytes(self, message: bytes, what: str, timeout: float | None = None) -> bytes:
        """Answer a request message as the board's firmware would, at once."""
        with self.lock:
            reply, _ = self._handler.handle_request(message)
        self.counters["requests"] += 1
        return reply

    def _step(self, seconds: float) -> bytes | None:
        with self.lock:
            words = self.board.generate(seconds)
        if not len(words):
            return None
        msg = P.encode_data_message(int(time.time()), words)
        if self.on_message is not None:
            self.on_message(msg)
        return msg

    def collect(self, seconds: float) -> list[bytes]:
        """Data messages the board sends over the next ``seconds`` of simulated time."""
        out: list[bytes] = []
        left = float(seconds)
        while left > 0:
            dt = min(left, COLLECT_CHUNK)
            left -= dt
            msg = self._step(dt)
            if msg is not None:
                out.append(msg)
        return out


def collect_messages(client: PacmanClient, seconds: float,
                     stop: threading.Event | None = None) -> list[bytes]:
    """The board's data messages over ``seconds`` (simulated time for a simulated board,
    wall time for a real one, whose data subscription is held meanwhile)."""
    if isinstance(client, SimBoardClient):
        return client.collect(seconds)
    was = client._subscribed
    client.subscribe()
    out: list[bytes] = []
    deadline = time.monotonic() + float(seconds)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                break
            out.extend(client.recv_messages(timeout=min(left, 0.05)))
    finally:
        if not was:
            client.unsubscribe()
    return out
