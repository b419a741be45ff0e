"""Log forwarding: the sending half of structured logging, and the record codec both halves use.

Every component process installs :class:`LogForwarder` (the component base does it by itself
when the core advertises a ``logs`` service; the core does it for its own records) and its log
records travel as msgpack maps over a ZeroMQ PUSH socket to the log collector
(:mod:`larpixdaq.pipeline.logcollector`), a component of role ``log`` that PULLs them.
This module sits low, beside the messages, because the component base and the core both
forward: neither may depend on the collector, which is itself a component.

PUSH/PULL rather than PUB/SUB: records queue (up to a bound) while the collector is briefly
away instead of vanishing, and a record that cannot be queued is counted in
``LogForwarder.dropped`` rather than blocking the component; logging must never stall readout.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import msgpack
import zmq

from larpixdaq.runcontrol.security import ClientKeys

RECORD_VERSION = 1
_COMPONENT_LOGGER = "larpixdaq.component."
_REQUIRED = {"time": (int, float), "level": (str,), "logger": (str,), "message": (str,),
             "host": (str,), "pid": (int,)}


class LogRecordError(ValueError):
    """Bytes that are not a log record of this version."""


def encode_record(record: logging.LogRecord, component: str = "") -> bytes:
    """The wire form of a log record: a flat msgpack map of plain values.

    Records of a component's own logger (``larpixdaq.component.NAME``) name that component;
    others name ``component``, the process's default.
    """
    if record.name.startswith(_COMPONENT_LOGGER):
        component = record.name[len(_COMPONENT_LOGGER):]
    body: dict[str, Any] = {
        "v": RECORD_VERSION, "time": record.created, "level": record.levelname,
        "logger": record.name, "message": record.getMessage(), "host": socket.gethostname(),
        "pid": record.process or 0, "thread": record.threadName or "", "component": component,
    }
    if record.exc_info:
        body["exc"] = logging.Formatter().formatException(record.exc_info)
    return msgpack.packb(body, use_bin_type=True)


def decode_record(data: bytes) -> dict[str, Any]:
    """Parse and check a record; :class:`LogRecordError` says what is wrong."""
    try:
        body = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise LogRecordError(f"not a msgpack log record ({type(exc).__name__})") from None
    if not isinstance(body, dict) or body.get("v") != RECORD_VERSION:
        raise LogRecordError(f"not a version {RECORD_VERSION} log record")
    for key, types in _REQUIRED.items():
        if not isinstance(body.get(key), types) or isinstance(body.get(key), bool):
            raise LogRecordError(f"log record field {key!r} is missing or of the wrong type")
    return body


def format_record(rec: dict[str, Any]) -> str:
    """One readable console line."""
    stamp = time.strftime("%H:%M:%S", time.localtime(rec["time"]))
    millis = int((rec["time"] % 1) * 1000)
    who = rec.get("component") or f"{rec['host']}:{rec['pid']}"
    line = f"{stamp}.{millis:03d} {rec['level']:<7} {who:<14} {rec['logger']}: {rec['message']}"
    if rec.get("exc"):
        line += "\n" + rec["exc"]
    return line


class LogForwarder(logging.Handler):
    """A logging handler that pushes records to a log collector without ever blocking."""

    def __init__(self, address: str, component: str = "", *, level: int = logging.INFO,
                 queue_limit: int = 10000, context: zmq.Context | None = None,
                 keys: ClientKeys | None = None) -> None:
        super().__init__(level)
        self.address = address
        self.component = component
        self.dropped = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._sock = (context or zmq.Context.instance()).socket(zmq.PUSH)
        self._sock.setsockopt(zmq.LINGER, 500)
        self._sock.setsockopt(zmq.SNDHWM, queue_limit)
        if keys is not None:  # a collector with keys takes records from key holders only
            keys.apply(self._sock)
        self._sock.connect(address)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = encode_record(record, self.component)
        except Exception:
            self.handleError(record)
            return
        with self._lock:
            if self._sock is None:
                return
            try:
                self._sock.send(data, zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                self.dropped += 1

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        super().close()


_installed: dict[tuple[str, str], tuple[LogForwarder, int]] = {}
_installed_lock = threading.Lock()


def install_forwarding(address: str, component: str = "", logger: str = "larpixdaq",
                       keys: ClientKeys | None = None) -> LogForwarder:
    """Forward records of ``logger`` to ``address`` (a CURVE client with ``keys``); once per
    process per address."""
    key = (address, logger)
    with _installed_lock:
        handler, count = _installed.get(key, (None, 0))
        if handler is None:
            handler = LogForwarder(address, component, keys=keys)
            logging.getLogger(logger).addHandler(handler)
            lg = logging.getLogger(logger)
            if lg.level == logging.NOTSET or lg.level > logging.INFO:
                lg.setLevel(logging.INFO)
        _installed[key] = (handler, count + 1)
        return handler


def uninstall_forwarding(address: str, logger: str = "larpixdaq") -> None:
    """Undo one :func:`install_forwarding`; the handler goes when its last user does."""
    key = (address, logger)
    with _installed_lock:
        handler, count = _installed.get(key, (None, 0))
        if handler is None:
            return
        if count > 1:
            _installed[key] = (handler, count - 1)
            return
        del _installed[key]
    logging.getLogger(logger).removeHandler(handler)
    handler.close()
