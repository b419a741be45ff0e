"""The online monitor: a component that watches a sample of the data and says what it sees.

It subscribes to the aggregator's monitor feed (a sampled copy of the data frames plus a
``stats`` message a second, see :mod:`larpixdaq.pipeline.protocol`), feeds batches of
frames to :class:`~larpixdaq.pipeline.monitorstate.MonitorState` (which does all the
arithmetic) and offers the result two ways:

* the action ``snapshot`` (through the core, like any other action: this is what the web UI
  uses, so it never talks to a component behind the core's back);
* a PUB socket (advertised to the core as ``monitor_snapshots``) sending
  ``[b"snapshot", json]`` about once a second, for tools that want a stream.

It resets on prepare, so a run's numbers start from zero when the run is READY, and clears
at the end of a run (its counts go to the run record first), so what it shows is always the
running run's.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import zmq

from larpixdaq.geometry import Detector
from larpixdaq.pipeline.monitorstate import MonitorState
from larpixdaq.pipeline.protocol import Frame, ProtocolError, Stats, parse_monitor_message
from larpixdaq.pipeline.tilemap import TileMap
from larpixdaq.runcontrol.actions import action
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.messages import RunInfo

SNAPSHOT = b"snapshot"
BATCH_FRAMES = 512
BAD_KINDS = {"header": "bad_header", "body": "bad_stats", "parts": "bad_parts"}
"""What the monitor calls a feed message it could not read (a ``decode_errors_`` kind), by
the part of it that was wrong (:attr:`ProtocolError.part`)."""


class MonitorComponent(Component):
    """The monitor under run control.

    ``source`` is the aggregator's monitor address (default: what the core advertises as
    ``monitor_pub``); ``publish`` the bind address of the snapshot stream (``None``: none);
    ``interval`` seconds between published snapshots; ``options`` go to MonitorState;
    ``detector``: which tile each UART feeds and where tiles are (default standard tiles).
    """

    role = "monitor"

    def __init__(self, name: str, core: str, *, source: str | None = None,
                 publish: str | None = "tcp://127.0.0.1:0", interval: float = 1.0,
                 options: dict[str, Any] | None = None, detector: Detector | None = None,
                 **kw: Any) -> None:
        ctx = kw.get("context") or zmq.Context.instance()
        self._pub: zmq.Socket | None = None
        endpoints: dict[str, str] = {}
        if publish:
            self._pub = ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 0)
            self._pub.setsockopt(zmq.SNDHWM, 10)
            self._pub.bind(publish[:-2] + ":*" if publish.endswith(":0") else publish)
            endpoints["monitor_snapshots"] = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        super().__init__(name, core, endpoints=endpoints, **kw)
        self.publish_address = endpoints.get("monitor_snapshots")
        self.source = source
        self.connected_to: str | None = None
        self.interval = float(interval)
        self.state_lock = threading.Lock()
        self.monitor = MonitorState(**(options or {}), tiles=TileMap(detector))
        self.monitor.reset(time.time())
        self.snapshots_published = 0
        self._last_counters: dict[str, Any] = {}

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._pub is not None:  # main() never ran
            self._pub.close(0)
            self._pub = None

    # --- run control ----------------------------------------------------------------------

    def on_prepare(self, run: RunInfo) -> dict | None:
        with self.state_lock:
            self.monitor.reset(time.time(), run.run_number)
        return None

    def on_end(self, run: RunInfo) -> dict | None:
        """The run's counts go to its record; then the display is cleared, so a page does
        not show an ended run's rates as if data were still flowing."""
        counts = self.counters()
        with self.state_lock:
            self.monitor.reset(time.time(), None, ended_run=run.run_number)
        return {"counters": counts}

    def counters(self) -> dict[str, Any]:
        # A heartbeat must not wait for a big batch being digested (a 2x2's feed can keep
        # the state busy for a second under load): then the last counts are sent again.
        if not self.state_lock.acquire(timeout=0.05):
            return dict(self._last_counters)
        try:
            c: dict[str, Any] = self.monitor.counters.as_dict()
            frac = self.monitor.fraction_seen()["words"]
            errors = dict(self.monitor.decode_errors)
        finally:
            self.state_lock.release()
        # What the decoder rejected, by kind, as storage reports it (bad frames included).
        c["decode_errors"] = sum(errors.values())
        c.update({f"decode_errors_{kind}": n for kind, n in errors.items()})
        c["fraction_seen"] = round(frac, 4) if frac is not None else -1.0
        c["snapshots_published"] = self.snapshots_published
        self._last_counters = c
        return c

    # --- actions --------------------------------------------------------------------------

    @action
    def snapshot(self, pixels: list[str] | None = None) -> dict[str, Any]:
        """What the monitor sees now: rates, hit maps, ADC, recent packets, alarms.

        pixels: the tiles ("io_group/tile") whose 70 x 70 maps to include (default: the
        first 8 tiles with data)."""
        with self.state_lock:
            snap = self.monitor.snapshot(time.time(), pixels)
        snap["monitor"] = self.name
        snap["source"] = self.connected_to
        return snap

    @action
    def clear(self) -> str:
        """Forget what the monitor has accumulated (as a prepare does), keeping the run."""
        with self.state_lock:
            self.monitor.reset(time.time(), self.monitor.run_number)
        return "monitor cleared"

    # --- the data loop --------------------------------------------------------------------

    def _source_address(self) -> str | None:
        if self.source:
            return self.source
        address = self.services.get("monitor_pub")
        return address if isinstance(address, str) else None

    def main(self, stop: threading.Event) -> None:
        ctx = self._ctx
        sub: zmq.Socket | None = None
        next_publish = time.monotonic() + self.interval
        try:
            while not stop.is_set():
                address = self._source_address()
                if address != self.connected_to:
                    if sub is not None:
                        sub.close(0)
                        sub = None
                    if address:
                        sub = ctx.socket(zmq.SUB)
                        sub.setsockopt(zmq.LINGER, 0)
                        if self._keys is not None:  # the aggregator's feed, with keys on
                            self._keys.apply(sub)
                        sub.setsockopt(zmq.RCVHWM, 1000)
                        sub.setsockopt(zmq.SUBSCRIBE, b"")
                        sub.connect(address)
                        self.log.info("monitoring frames from %s", address)
                    self.connected_to = address
                if sub is None or not sub.poll(100):
                    if sub is None:
                        stop.wait(0.1)
                else:
                    self._drain(sub)
                now = time.monotonic()
                if now >= next_publish:
                    next_publish = now + self.interval
                    self._publish()
        finally:
            if sub is not None:
                sub.close(0)
            if self._pub is not None:
                self._pub.close(0)
                self._pub = None

    def _drain(self, sub: zmq.Socket) -> None:
        """Read what is waiting (up to a batch) and hand it to the state in one call."""
        headers, payloads = [], []
        bad: list[str] = []
        stats: list[Stats] = []
        for _ in range(BATCH_FRAMES):
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = parse_monitor_message(parts)
            except ProtocolError as exc:
                bad.append(BAD_KINDS[exc.part])
                continue
            if isinstance(msg, Frame):
                headers.append(msg.header)
                payloads.append(msg.payload)
            else:
                stats.append(msg)
        with self.state_lock:
            for kind in bad:
                self.monitor.add_bad(kind)
            for st in stats:
                self.monitor.add_stats(st)
            if headers:
                self.monitor.add(headers, payloads, time.time())
            else:
                self.monitor.tick(time.time())

    def _publish(self) -> None:
        if self._pub is None:
            return
        body = json.dumps(self.snapshot(), separators=(",", ":")).encode()
        try:
            self._pub.send_multipart([SNAPSHOT, body], zmq.NOBLOCK)
            self.snapshots_published += 1
        except zmq.Again:
            pass
