"""Helpers shared by the run-control tests: a real core process, recording components."""

from __future__ import annotations

import time

from larpixdaq.pipeline.component import Component, action
from larpixdaq.runcontrol.testing import CoreProcess, wait_for

__all__ = ["COMPONENT_SCRIPT", "CoreProcess", "Recorder", "wait_for"]


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
