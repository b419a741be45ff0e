"""The log collector: the receiving end of structured logging, one place for every record.

Components forward their records (:mod:`larpixdaq.runcontrol.logforward`) to the
:class:`LogCollector`, a component of role ``log`` that PULLs them, appends each as one JSON
line to a file, and prints a readable line on the console.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import zmq

from larpixdaq.pipeline.addresses import DEFAULT_LOGS_BIND
from larpixdaq.runcontrol.addresses import DEFAULT_CORE
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.logforward import LogRecordError, decode_record, format_record
from larpixdaq.runcontrol.security import server_keys


class LogCollector(Component):
    """Receives every component's records; writes JSON lines to ``path`` and text to console.

    ``bind`` is where to listen (default: the core's port + 1 on every interface; port 0
    picks a free one). The actual endpoint is advertised to the core as the ``logs`` service,
    so components find it.
    """

    role = "log"

    def __init__(self, name: str = "logs", core: str = DEFAULT_CORE, *,
                 bind: str = DEFAULT_LOGS_BIND, path: str | Path = "larpix-daq.log",
                 console: TextIO | None = sys.stderr, **kw: Any) -> None:
        ctx = kw.get("context") or zmq.Context.instance()
        self._pull = ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
        # With keys, records only from key holders (no forged ERROR in the log file).
        self._server_keys = server_keys(kw.get("keys"))
        if self._server_keys is not None:
            self._server_keys.apply(self._pull, ctx)
        if bind.startswith("tcp://") and bind.endswith(":0"):
            bind = bind[:-2] + ":*"
        self._pull.bind(bind)
        endpoint = self._pull.getsockopt_string(zmq.LAST_ENDPOINT)
        if "0.0.0.0" in endpoint:
            endpoint = endpoint.replace("0.0.0.0", socket.gethostname())
        self.endpoint = endpoint
        # The collector forwards its own records to itself, like any other component.
        super().__init__(name, core, endpoints={"logs": endpoint}, **kw)
        self.path = Path(path)
        self.console = console
        self.received = 0
        self.malformed = 0
        self.written = 0
        self.dropped = 0
        self.last_error = ""

    def counters(self) -> dict[str, int]:
        return {"records_received": self.received, "records_malformed": self.malformed,
                "records_written": self.written, "records_dropped": self.dropped}

    def main(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if not self._pull.poll(100):
                    continue
                lines = []
                while True:
                    try:
                        data = self._pull.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.received += 1
                    try:
                        rec = decode_record(data)
                    except LogRecordError as exc:
                        self.malformed += 1
                        self.last_error = str(exc)
                        continue
                    lines.append(rec)
                if lines:
                    self._write(lines)
        finally:
            self._pull.close(0)
            if self._server_keys is not None:
                self._server_keys.close()

    def _write(self, lines: list[dict[str, Any]]) -> None:
        """Append records to the file, whole lines in one ``write``; a file that cannot take
        them (a full disk, a removed directory) costs those records, counted, never the
        collector: it writes again as soon as the file can take them."""
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in lines).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.lseek(fd, 0, os.SEEK_END)
                view = memoryview(data)
                try:
                    while view:
                        view = view[os.write(fd, view):]
                except OSError:
                    # Take back the part of a line that did fit: the file keeps whole lines,
                    # and the next batch starts on a line of its own.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
            self.written += len(lines)
        except OSError as exc:
            first = not self.dropped
            self.dropped += len(lines)
            self.last_error = f"cannot write {self.path}: {exc}"
            if first and self.console is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.console.write(f"log collector: {self.last_error}; records are "
                                       "counted as records_dropped until it can\n")
        if self.console is not None:
            with contextlib.suppress(OSError, ValueError):  # a console on a full disk too
                self.console.write("".join(format_record(r) + "\n" for r in lines))
                self.console.flush()
