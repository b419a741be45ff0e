"""Fixtures for the run-control tests (real core processes, in-process components)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rc_helpers import COMPONENT_SCRIPT, CoreProcess, Recorder

from larpixdaq.pipeline.component import Component


@pytest.fixture
def core(tmp_path):
    c = CoreProcess(tmp_path / "runs.sqlite").start()
    yield c
    c.terminate()


@pytest.fixture
def components(core):
    """A factory; every component it makes is stopped at the end."""
    made: list[Component] = []
    journal: list = []

    def make(name, role, **kw):
        c = Recorder(name, core.endpoint, role, journal, **kw).start()
        made.append(c)
        assert c.wait_registered(5)
        return c

    make.journal = journal
    make.made = made
    yield make
    for c in made:
        c.stop()


@pytest.fixture
def spawn_component():
    procs: list[subprocess.Popen] = []

    def spawn(name, endpoint, role="producer"):
        p = subprocess.Popen([sys.executable, "-c", COMPONENT_SCRIPT, name, endpoint, role],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "registered"
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)
        p.stdout.close()


@pytest.fixture
def components_factory_for_restart(tmp_path):
    """A core the test may kill, plus components that outlive it."""
    c = CoreProcess(tmp_path / "runs.sqlite").start()
    made: list[Component] = []
    journal: list = []

    def make(name, role, **kw):
        comp = Recorder(name, c.endpoint, role, journal, **kw).start()
        made.append(comp)
        assert comp.wait_registered(5)
        return comp

    yield c, make
    for comp in made:
        comp.stop()
    c.terminate()
