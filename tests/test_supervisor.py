"""The supervisor with real `larpix-daq` children: it starts them in order, restarts one that
is SIGKILLed, and stops them all (youngest first) when it gets SIGTERM."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from larpixdaq.processes import process_alive
from larpixdaq.runcontrol.testing import wait_for
from larpixdaq.supervisor import Supervisor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(tmp: Path) -> list[tuple[str, list[str]]]:
    """A core on a port chosen now and a log collector that registers with it."""
    core = f"tcp://127.0.0.1:{_free_port()}"
    return [("core", ["core", "--core", core, "--db", str(tmp / "runs.sqlite")]),
            ("logs", ["logs", "--core", core, "--bind", "tcp://127.0.0.1:0",
                      "--file", str(tmp / "daq.log")])]


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[Supervisor, io.StringIO]]:
    out = io.StringIO()
    sup = Supervisor(out=out, grace=10.0, start_timeout=60.0)
    for name, args in _children(tmp_path):
        sup.add(name, args)
    try:
        yield sup, out
    finally:
        sup.stop_all()


def test_children_start_in_order_each_with_its_first_line(supervisor) -> None:
    sup, out = supervisor
    sup.start_all()
    core, logs = sup.children
    assert core.first_line.startswith("core listening on tcp://127.0.0.1:")
    assert logs.first_line.startswith("log collector logs on tcp://127.0.0.1:")
    assert all(c.proc is not None and c.proc.poll() is None for c in sup.children)
    text = out.getvalue()
    assert text.index("[core] core listening") < text.index("[logs] log collector")


def test_a_sigkilled_child_is_started_again(supervisor) -> None:
    sup, out = supervisor
    sup.start_all()
    watcher = threading.Thread(target=sup.watch, daemon=True)
    watcher.start()
    try:
        logs = sup.children[1]
        old = logs.proc.pid
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: logs.proc is not None and logs.proc.pid != old
                 and logs.proc.poll() is None)
        assert logs.history == [-signal.SIGKILL] and logs.restarts == 1
        assert "[up] logs exited with -9; restarting" in out.getvalue()
        assert logs.first_line.startswith("log collector logs on")
        core = sup.children[0]
        assert core.restarts == 0 and core.proc.poll() is None  # the others untouched
    finally:
        sup.request_stop()
        watcher.join(30)
    assert not watcher.is_alive()


SUPERVISED = """
import sys
from larpixdaq.supervisor import Supervisor
sup = Supervisor(grace=10.0, start_timeout=60.0)
for name, *args in {children!r}:
    sup.add(name, args)
sup.run()
"""


def test_sigterm_stops_every_child_youngest_first(tmp_path: Path) -> None:
    children = [(name, *args) for name, args in _children(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED.format(children=children)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    pids: list[int] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(x.startswith("[logs] log collector") for x in lines), timeout=60)
        pids += [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)],
                                                capture_output=True, text=True).stdout.split()]
        assert len(pids) == 2 and all(process_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        reader.join(10)
        assert not [p for p in pids if process_alive(p)]
        stopped = [m.group(1) for m in map(re.compile(r"\[up\] (\w+) stopped").match, lines)
                   if m]
        assert stopped == ["logs", "core"]
    finally:
        for pid in [p for p in pids if process_alive(p)]:  # a failed test leaves no orphans
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def test_the_first_restart_is_at_once_and_the_next_ones_wait_longer_each_time():
    from larpixdaq.supervisor import MAX_RESTART_DELAY, RESTART_DELAY, next_delay

    delays = [0.0]
    for _ in range(7):
        delays.append(next_delay(delays[-1]))
    assert delays == [0.0, RESTART_DELAY, 1.0, 2.0, 4.0, MAX_RESTART_DELAY, 8.0, 8.0]
