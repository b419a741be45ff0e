"""Helpers shared by the run-control tests: a real core process, recording components."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from larpixdaq.pipeline.component import Component, action

FAST = ["--heartbeat-interval", "0.05", "--heartbeat-timeout", "0.4", "--ack-timeout", "1.0",
        "--rejoin-grace", "1.5"]


class CoreProcess:
    """`larpix-daq core` in a subprocess, on a free port, killable and restartable."""

    def __init__(self, db: Path, extra: list[str] | None = None) -> None:
        self.db = db
        self.extra = extra or []
        self.endpoint = "tcp://127.0.0.1:0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> CoreProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "larpixdaq.cli", "core", "--core", self.endpoint,
             "--db", str(self.db), *FAST, *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("core listening on "):
            self.proc.kill()
            raise RuntimeError(f"core did not start: {line!r}")
        self.endpoint = line.split()[3]
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        if self.proc:
            self.proc.stdout.close()

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        if self.proc:
            self.proc.stdout.close()


class Recorder(Component):
    """A component that records every hook call (in a list shared by several)."""

    def __init__(self, name, core, role, journal, *, prepare_delay=0.0, **kw):
        super().__init__(name, core, role=role, heartbeat_interval=0.05, core_timeout=0.5,
                         **kw)
        self.journal = journal
        self.prepare_delay = prepare_delay
        self.written = 0
        self.runs_seen = []

    def counters(self):
        if self.role == "storage":
            return {"packets_written": self.written, "packets_lost": 1}
        return {"packets_sent": self.written}

    def on_prepare(self, run):
        time.sleep(self.prepare_delay)
        self.runs_seen.append(run)
        self.journal.append((self.name, "prepare", run.run_number))

    def on_begin(self, run):
        self.journal.append((self.name, "begin", run.run_number))
        self.written += 10

    def on_end(self, run):
        self.journal.append((self.name, "end", run.run_number))
        if self.role == "storage":
            return {"files": [f"/data/run{run.run_number}-{self.name}.h5"]}
        return None

    @action
    def scan(self, steps: int, label: str = "x"):
        """Step through a scan, reporting each step."""
        for i in range(steps):
            yield {"step": i, "label": label}
        return {"steps": steps}

    @action
    def slow(self, seconds: float = 1.0):
        """Sleep; stands for a long calibration."""
        time.sleep(seconds)
        return "slept"

    @action
    def broken(self):
        """Always fails."""
        raise RuntimeError("the board is on fire")


COMPONENT_SCRIPT = r"""
import sys, time
from larpixdaq.pipeline.component import Component
class P(Component):
    role = sys.argv[3]
    def counters(self):
        return {"packets_sent": 1}
c = P(sys.argv[1], sys.argv[2], heartbeat_interval=0.05, core_timeout=0.5)
c.start()
c.wait_registered(5)
print("registered", flush=True)
while True:
    time.sleep(1)
"""


def wait_for(predicate, timeout=5.0, interval=0.02):
    """Poll until ``predicate()`` is true; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    assert value, "condition not reached"
    return value
