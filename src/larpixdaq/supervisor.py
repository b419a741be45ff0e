"""The supervisor behind `larpix-daq up`: the whole DAQ as child processes on one machine.

Each component runs as its own `larpix-daq <command>` process, exactly as it would on a
separate machine, so nothing about running together is special. The supervisor starts the
first child (the core) and waits for its first line (its address), then starts all the others
at once and waits for their first lines together: every component registers within a few
seconds of the core, inside the core's rejoin grace. It restarts a child that dies (with a
growing back-off, so a child that cannot start does not spin).

On SIGINT, SIGTERM or SIGHUP it first calls ``before_stop`` (``larpix-daq up`` ends the run
there, while every component is still alive), then stops the children in reverse order:
SIGTERM, then SIGKILL after a grace period. The children run in process groups of their own,
so a Ctrl-C at the terminal reaches only the supervisor and not, at the same moment, the
components that must carry out the end of the run; and each child gets SIGTERM should the
supervisor die without stopping it (Linux ``PR_SET_PDEATHSIG``), so no DAQ is left behind
without its supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from larpixdaq.processes import end_process

CLI = [sys.executable, "-m", "larpixdaq.cli"]

#: The signals that stop the supervisor (after ``before_stop``): Ctrl-C, ``kill``, and the
#: terminal going away.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RESTART_DELAY = 0.5
"""Seconds before a child that died again soon is started again, doubled at each death up
to :data:`MAX_RESTART_DELAY`. A child that had run for a while is started again at once:
a producer's board goes on sending while it is dead, and what nobody reads is lost."""
MAX_RESTART_DELAY = 8.0
WATCH_INTERVAL = 0.1
"""Seconds between two looks at the children (a death is seen this late at most)."""


def next_delay(delay: float) -> float:
    """The delay after ``delay`` (0, then :data:`RESTART_DELAY`, doubled, at most the max)."""
    return min(max(delay * 2, RESTART_DELAY), MAX_RESTART_DELAY)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux; elsewhere a
    no-op). Async-signal-safe enough: one system call through an already loaded libc."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


@dataclass
class Child:
    """One supervised process: its name, its `larpix-daq` arguments, and its state."""

    name: str
    args: list[str]
    restart: bool = True
    proc: subprocess.Popen | None = None
    first_line: str = ""
    restarts: int = 0
    backoff: float = 0.0  # before the next start after a death (see RESTART_DELAY)
    next_start: float = 0.0
    started_at: float = 0.0
    history: list[int] = field(default_factory=list)


class Supervisor:
    """Starts, watches and stops :class:`Child` processes; see the module docstring."""

    def __init__(self, out: IO[str] | None = None, grace: float = 5.0,
                 start_timeout: float = 20.0,
                 before_stop: Callable[[str], None] | None = None) -> None:
        """``before_stop(why)`` runs when a stop is requested, before any child is stopped
        (``why``: the signal's name, e.g. ``SIGINT``)."""
        self.children: list[Child] = []
        self.out = out or sys.stdout
        self.grace = grace
        self.start_timeout = start_timeout
        self.before_stop = before_stop
        #: Why the supervisor is stopping (the signal's name), once it is.
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    # -- children ----------------------------------------------------------------------------
    def add(self, name: str, args: list[str], restart: bool = True) -> Child:
        child = Child(name, list(args), restart)
        self.children.append(child)
        return child

    def _launch(self, child: Child) -> subprocess.Popen:
        proc = subprocess.Popen([*CLI, *child.args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1,
                                process_group=0, preexec_fn=_die_with_parent)
        child.proc = proc
        child.started_at = time.monotonic()
        return proc

    def _spawn(self, child: Child) -> bool:
        return self._started(child, self._launch(child))

    def _started(self, child: Child, proc: subprocess.Popen) -> bool:
        """Wait for ``child``'s first line; False (and said) if it gives none."""
        line = self._first_line(proc)
        if not line:
            code = proc.wait(5) if proc.poll() is None else proc.returncode
            self.say(f"[up] {child.name} did not start (exit {code})")
            child.proc = None
            return False
        child.first_line = line.rstrip()
        self.say(f"[{child.name}] {child.first_line}")
        threading.Thread(target=self._pump, args=(child, proc), daemon=True).start()
        return True

    def _first_line(self, proc: subprocess.Popen) -> str:
        """The child's first line of output (its addresses), skipping log lines."""
        box: list[str] = []

        def read() -> None:
            for line in proc.stdout:
                box.append(line)
                if not _is_log_line(line):
                    return
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(self.start_timeout)
        for line in box[:-1]:
            self.say(line.rstrip())
        return box[-1] if box and not _is_log_line(box[-1]) else ""

    def _pump(self, child: Child, proc: subprocess.Popen) -> None:
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                self.say(f"[{child.name}] {line.rstrip()}")

    def start_all(self) -> None:
        """The first child, then all the others at once (see the module docstring)."""
        if not self.children or self._stop.is_set():
            return
        first, *rest = self.children
        if not self._spawn(first) and not first.restart:
            raise RuntimeError(f"{first.name} did not start")
        launched = [(c, self._launch(c)) for c in rest if not self._stop.is_set()]
        results: dict[str, bool] = {}
        waiters = [threading.Thread(target=lambda c=c, p=p: results.__setitem__(
            c.name, self._started(c, p)), daemon=True) for c, p in launched]
        for t in waiters:
            t.start()
        for t in waiters:
            t.join()
        for child, _ in launched:
            if not results.get(child.name) and not child.restart:
                raise RuntimeError(f"{child.name} did not start")

    def watch(self, on_tick: Callable[[], None] | None = None) -> None:
        """Restart children that die, until :meth:`request_stop`."""
        while not self._stop.wait(WATCH_INTERVAL):
            now = time.monotonic()
            for child in self.children:
                proc = child.proc
                if proc is not None and proc.poll() is None:
                    if now - child.started_at > 30:
                        child.backoff = 0.0  # it has been healthy a while
                    continue
                if proc is not None:
                    child.history.append(proc.returncode)
                    self.say(f"[up] {child.name} exited with {proc.returncode}"
                             + ("; restarting" if child.restart else ""))
                    child.proc = None
                    child.next_start = now + child.backoff
                    child.backoff = next_delay(child.backoff)
                if child.restart and now >= child.next_start:
                    child.restarts += 1
                    if not self._spawn(child):
                        child.next_start = time.monotonic() + child.backoff
                        child.backoff = next_delay(child.backoff)
            if on_tick is not None:
                on_tick()

    def request_stop(self, why: str = "stop requested") -> None:
        if self.stop_reason is None:
            self.stop_reason = why
        self._stop.set()

    def _on_signal(self, signum: int, frame: object) -> None:
        # Nothing printed here: the handler may interrupt a thread that holds the console.
        self.request_stop(signal.Signals(signum).name)

    def stop_all(self) -> None:
        """SIGTERM every child, youngest dependency first; SIGKILL what outlives the grace."""
        self._stop.set()
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            if end_process(proc, signal.SIGTERM, self.grace):
                self.say(f"[up] {child.name} ignored SIGTERM for {self.grace:g} s; killed it")
            self.say(f"[up] {child.name} stopped")
            child.proc = None

    def run(self) -> None:
        """Start everything, watch until SIGINT/SIGTERM/SIGHUP, run ``before_stop``, stop
        everything."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start_all()
            self.watch()
            if self.before_stop is not None:
                try:
                    self.before_stop(self.stop_reason or "stop requested")
                except Exception as exc:  # stopping the children must happen regardless
                    self.say(f"[up] before stopping: {type(exc).__name__}: {exc}")
        finally:
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _is_log_line(line: str) -> bool:
    """Log records (``2026-01-01 12:00:00,000 name LEVEL ...``) are not a child's banner."""
    return len(line) > 20 and line[:4].isdigit() and line[4] == "-" and line[10] == " "
