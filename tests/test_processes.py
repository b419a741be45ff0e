"""Ending child processes: polite signal first, SIGKILL after the grace period."""

from __future__ import annotations

import signal
import subprocess
import sys

from larpixdaq.processes import end_process


def _python(code: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.stdout.close()
    return proc


def test_a_process_that_obeys_sigterm_is_not_killed() -> None:
    proc = _python("import time; print('ready', flush=True); time.sleep(60)")
    assert end_process(proc, signal.SIGTERM, grace=10) is False
    assert proc.returncode == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _python("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                   "print('ready', flush=True); time.sleep(60)")
    assert end_process(proc, signal.SIGTERM, grace=0.2) is True
    assert proc.returncode == -signal.SIGKILL


def test_a_process_that_already_ended_is_only_reaped() -> None:
    proc = _python("print('ready', flush=True)")
    proc.wait(10)
    assert end_process(proc) is False
    assert proc.returncode == 0
