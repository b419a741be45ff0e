"""Calls handed to the one thread that owns a component's sockets and files.

ZeroMQ sockets and HDF5 writers must be used from a single thread. Run-control hooks
arrive on other threads, so they post a function here and wait for its result; the owning
thread runs what is pending between two batches of its own work.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class ThreadCalls:
    """A mailbox of functions for the owning thread to run."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` on the owning thread; return its result or raise its exception
        (``TimeoutError`` if the owner does not get to it within ``timeout``)."""
        fut: Future = Future()
        self._calls.put((fn, fut))
        return fut.result(timeout)

    def run_pending(self) -> None:
        """On the owning thread: run every posted call, each result to its caller."""
        while True:
            try:
                fn, fut = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
