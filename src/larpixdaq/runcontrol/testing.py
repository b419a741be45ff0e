"""A real core in a subprocess, for tests of anything that talks to run control.

Components are tested against the real thing rather than a mock of the core: this starts
``python -m larpixdaq.cli core`` on a free loopback port with short heartbeats, reads the
endpoint it prints, and kills it when asked (or lets a test kill and restart it)::

    with CoreProcess(tmp_path / "runs.sqlite") as core:
        comp = MyComponent("x", core.endpoint, heartbeat_interval=0.05).start()
        ...
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from larpixdaq.processes import end_process

#: Short timings so that losses and time-outs happen within a test's patience.
FAST_OPTIONS = ["--heartbeat-interval", "0.05", "--heartbeat-timeout", "0.6",
                "--ack-timeout", "1.0", "--rejoin-grace", "1.5"]

T = TypeVar("T")


class CoreProcess:
    """`larpix-daq core` in a subprocess, on a free port (or a given endpoint), killable."""

    def __init__(self, db: str | Path, extra: list[str] | None = None,
                 endpoint: str = "tcp://127.0.0.1:0") -> None:
        self.db = Path(db)
        self.extra = list(extra or [])
        self.endpoint = endpoint
        self.proc: subprocess.Popen | None = None

    def start(self) -> CoreProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "larpixdaq.cli", "core", "--core", self.endpoint,
             "--db", str(self.db), *FAST_OPTIONS, *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("core listening on "):
            self.proc.kill()
            self.proc.wait(5)
            self.proc.stdout.close()
            raise RuntimeError(f"the core did not start: {line!r}")
        self.endpoint = line.split()[3]
        return self

    def _end(self, sig: int) -> None:
        if self.proc is None:
            return
        end_process(self.proc, sig, grace=5.0)
        self.proc.stdout.close()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the core gets no chance to tidy up (a crash)."""
        self._end(signal.SIGKILL)

    def terminate(self) -> None:
        self._end(signal.SIGTERM)

    def __enter__(self) -> CoreProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.terminate()


WAIT_TIMEOUT = 30.0
"""How long a test waits for a condition by default: only a bound (a condition that holds
returns at once), so generous enough for a busy 2-core machine."""


def wait_for(predicate: Callable[[], T], timeout: float = WAIT_TIMEOUT,
             interval: float = 0.02) -> T:
    """Poll until ``predicate()`` is truthy and return it; AssertionError after ``timeout``.

    Tests wait on the condition they need, never a fixed sleep: a sleep is too short on a
    loaded machine and wasted on an idle one."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    if not value:
        raise AssertionError(f"condition not reached within {timeout:g} s")
    return value
