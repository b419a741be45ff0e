"""Fixtures for the run-control tests (real core processes, in-process components)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from larpixdaq.runcontrol.actions import action
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.testing import CoreProcess


class Recorder(Component):
    """A component that records every hook call (in a list shared by several)."""

    def __init__(self, name, core, role, journal, *, prepare_delay=0.0, lost=0, extra=None,
                 **kw):
        super().__init__(name, core, role=role, heartbeat_interval=0.05, core_timeout=0.5,
                         **kw)
        self.journal = journal
        self.prepare_delay = prepare_delay
        self.written = 0
        self.lost = lost
        self.extra = dict(extra or {})  # more counters to report (e.g. refusals)
        self.runs_seen = []
        self.preparing = threading.Event()  # set when on_prepare starts (a test waits on it)

    def counters(self):
        if self.role == "storage":
            return {"packets_written": self.written, "packets_lost": self.lost, **self.extra}
        return {"packets_sent": self.written, **self.extra}

    def on_prepare(self, run):
        self.preparing.set()
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
from larpixdaq.runcontrol.component import Component
class P(Component):
    role = sys.argv[3]
    def counters(self):
        if self.role == "storage":
            return {"packets_written": 5, "packets_lost": 0}
        return {"packets_sent": 1}
    def on_prepare(self, run):
        if float(sys.argv[4]) > 0:  # a slow prepare says when it starts (a test waits on it)
            sys.stdout.write("preparing\n")
            sys.stdout.flush()
        time.sleep(float(sys.argv[4]))
c = P(sys.argv[1], sys.argv[2], heartbeat_interval=0.05, core_timeout=0.5)
c.start()
c.wait_registered(5)
print("registered", flush=True)
while True:
    time.sleep(1)
"""


@pytest.fixture
def make_core(tmp_path):
    """A factory of cores with extra options (e.g. another ``--rejoin-grace``)."""
    made: list[CoreProcess] = []

    def make(*extra):
        c = CoreProcess(tmp_path / f"runs-{len(made)}.sqlite", extra=list(extra)).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.terminate()


@pytest.fixture
def recorders():
    """In-process components on a core of the test's choosing; all stopped at the end.

    ``pid`` pretends the component is another process (a restart on the same host)."""
    made: list[Component] = []
    journal: list = []

    def make(name, role, endpoint, *, pid=None, wait=True, **kw):
        c = Recorder(name, endpoint, role, journal, **kw)
        if pid is not None:
            c.pid = pid
        made.append(c.start())
        if wait:
            assert c.wait_registered(5)
        return c

    make.journal = journal
    make.made = made
    yield make
    for c in made:
        c.stop()


@pytest.fixture
def components(core, recorders):
    """A factory of components on ``core``; every one it makes is stopped at the end.

    ``journal`` is the hook calls of them all, in order; ``made`` the components."""

    def make(name, role, **kw):
        return recorders(name, role, core.endpoint, **kw)

    make.journal = recorders.journal
    make.made = recorders.made
    return make


@pytest.fixture
def spawn_component():
    procs: list[subprocess.Popen] = []

    def spawn(name, endpoint, role="producer", prepare_delay=0.0):
        p = subprocess.Popen([sys.executable, "-c", COMPONENT_SCRIPT, name, endpoint, role,
                              str(prepare_delay)],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)  # before any check, so a process that misbehaves is still ended
        assert p.stdout.readline().strip() == "registered"
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)
        p.stdout.close()


@pytest.fixture
def components_factory_for_restart(core, components):
    """A core the test may kill, plus components that outlive it."""
    return core, components
