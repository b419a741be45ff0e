"""Ending a child process: ask with a signal, wait a grace period, then SIGKILL.

The supervisor and the test harnesses all stop processes this way; one function keeps the
escalation (and the reaping that avoids zombies) the same everywhere.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
from pathlib import Path
from typing import IO


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


class LockHeld(Exception):
    """Another process holds the lock file; ``holder`` is the pid written in it (or "?")."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by pid {holder}")
        self.path = path
        self.holder = holder


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (one of another user's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def take_pid_lock(path: str | Path) -> IO[str]:
    """Hold an exclusive lock on ``path`` for as long as the returned file stays open, with
    this process's pid written in it (so a refusal can name the holder). The lock goes with
    the process: one killed with SIGKILL does not block its successor. Raises
    :class:`LockHeld` if another process holds it."""
    path = Path(path)
    lock = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held by the caller
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise LockHeld(path, holder) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock
