"""Ending a child process: ask with a signal, wait a grace period, then SIGKILL.

The supervisor and the test harnesses all stop processes this way; one function keeps the
escalation (and the reaping that avoids zombies) the same everywhere.
"""

from __future__ import annotations

import signal
import subprocess


def end_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> bool:
    """Send ``sig`` and wait ``grace`` seconds; SIGKILL what is still running.

    Returns True if the process had to be killed. A process that has already exited is
    only reaped.
    """
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    try:
        proc.wait(grace)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return True
