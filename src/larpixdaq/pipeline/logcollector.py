"""The log collector: the receiving end of structured logging, one place for every record.

Components forward their records (:mod:`larpixdaq.runcontrol.logforward`) to the
:class:`LogCollector`, a component of role ``log`` that PULLs them, appends each as one JSON
line to a file, and prints a readable line on the console.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import zmq

from larpixdaq.runcontrol.addresses import DEFAULT_CORE
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.logforward import LogRecordError, decode_record, format_record


class LogCollector(Component):
    """Receives every component's records; writes JSON lines to ``path`` and text to console.

    ``bind`` is where to listen (``tcp://*:5551``; port 0 picks a free one). The actual
    endpoint is advertised to the core as the ``logs`` service, so components find it.
    """

    role = "log"

    def __init__(self, name: str = "logs", core: str = DEFAULT_CORE, *,
                 bind: str = "tcp://*:5551", path: str | Path = "larpix-daq.log",
                 console: TextIO | None = sys.stderr, **kw: Any) -> None:
        ctx = kw.get("context") or zmq.Context.instance()
        self._pull = ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.LINGER, 0)
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
        self.last_error = ""

    def counters(self) -> dict[str, int]:
        return {"records_received": self.received, "records_malformed": self.malformed,
                "records_written": self.written}

    def main(self, stop: threading.Event) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
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
                if not lines:
                    continue
                out.write("".join(json.dumps(r, sort_keys=True) + "\n" for r in lines))
                out.flush()
                self.written += len(lines)
                if self.console is not None:
                    self.console.write("".join(format_record(r) + "\n" for r in lines))
                    self.console.flush()
        self._pull.close(0)
