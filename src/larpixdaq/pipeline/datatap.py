"""A routine's copy of the data a producer forwards during a run.

A routine that analyses a run's data while it is recorded (a pedestal or threshold scan
reading hits) must never slow the run down: its copy is bounded and never waited for.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time

DEFAULT_TAP_MESSAGES = 4096
"""Messages a routine's copy of the run's data holds before it drops: bounded, so a routine
that reads slower than the board sends costs memory of its own copy only, never the run."""


class DataTap:
    """A copy of what a producer forwards, for a routine that analyses a run's data while
    it is recorded. Bounded, and never waited for (the run comes first): what does not fit
    is counted in ``dropped`` and the routine says so."""

    def __init__(self, max_messages: int = DEFAULT_TAP_MESSAGES) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(max_messages)
        self.dropped = 0

    def offer(self, messages: list[bytes]) -> int:
        """Queue a copy of ``messages``; returns how many did not fit (dropped)."""
        dropped = 0
        for message in messages:
            try:
                self._queue.put_nowait(message)
            except queue.Full:
                dropped += 1
        self.dropped += dropped
        return dropped

    def take(self, seconds: float, stop: threading.Event | None = None) -> list[bytes]:
        """Messages forwarded over the next ``seconds`` of wall time."""
        out: list[bytes] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not (stop and stop.is_set()):
            with contextlib.suppress(queue.Empty):
                out.append(self._queue.get(timeout=min(left, 0.05)))
        return out
