"""The producer: owns one board (one io_group) and forwards its PACMAN messages, framed.

Its messages come from a :class:`~larpixdaq.pipeline.sources.Source`: the simulated board,
a PACMAN board or a replayed file (see :mod:`larpixdaq.pipeline.sources`); all give whole
PACMAN ``D`` messages, bytes unchanged. Frames and the credit they need are messages of
:mod:`larpixdaq.pipeline.protocol`.

Data flows only between prepare and end (READY and RUN). Every frame gets the next ``seq``
of the stream and its word ``offset``; ``Beginning run`` goes out at begin and ``Ending
run`` (flagged ``last``) at end, in order with the data. Sending needs credit from the
aggregator; without credit the producer waits (the board's own buffers then fill: that is
the only place where data can be lost, and the PACMAN client counts it).

The software copy of the chips' configuration (see :mod:`larpixdaq.pipeline.boardactions`;
for a simulated board, what its chips hold at start-up) is sent as a ``configs`` frame just
before each run marker, so the file holds the configuration at the beginning and at the end
of the run. Configuration actions and routines (:class:`~.boardactions.BoardActions`, part
of :class:`ProducerComponent`) run in another thread while data flows; the sources share
their board with them through ``source.lock``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES
from larpixdaq.pipeline.boardactions import BoardActions
from larpixdaq.pipeline.counters import Counters
from larpixdaq.pipeline.protocol import (
    KIND_CONFIGS,
    KIND_DATA,
    KIND_INFO,
    Frame,
    FrameHeader,
    ProducerHello,
    ProtocolError,
    parse_credit,
)
from larpixdaq.pipeline.sources import Source
from larpixdaq.pipeline.threadcalls import ThreadCalls
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.messages import RunInfo

log = logging.getLogger("larpixdaq.producer")

DEFAULT_TAP_MESSAGES = 4096
"""Messages a routine's copy of the run's data holds before it drops: bounded, so a routine
that reads slower than the board sends costs memory of its own copy only, never the run."""


@dataclass
class ProducerCounters(Counters):
    """What a producer counts (these names are what heartbeats and the run record show)."""

    frames_sent: int = 0
    packets_sent: int = 0
    bytes_sent: int = 0
    info_frames: int = 0
    credit_waits: int = 0
    seconds_waiting_credit: float = 0.0
    hellos: int = 0
    bad_messages: int = 0
    messages_unsent: int = 0
    tap_messages_dropped: int = 0


class DataTap:
    """A copy of what a producer forwards, for a routine that analyses a run's data while
    it is recorded. Bounded, and never waited for (the run comes first): what does not fit
    is counted in ``dropped`` and the routine says so."""

    def __init__(self, max_messages: int = DEFAULT_TAP_MESSAGES) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(max_messages)
        self.dropped = 0

    def offer(self, messages: list[bytes]) -> int:
        """Queue a copy of ``messages``; returns how many did not fit (dropped)."""
        dropped = 0
        for message in messages:
            try:
                self._queue.put_nowait(message)
            except queue.Full:
                dropped += 1
        self.dropped += dropped
        return dropped

    def take(self, seconds: float, stop: threading.Event | None = None) -> list[bytes]:
        """Messages forwarded over the next ``seconds`` of wall time."""
        out: list[bytes] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not (stop and stop.is_set()):
            with contextlib.suppress(queue.Empty):
                out.append(self._queue.get(timeout=min(left, 0.05)))
        return out


class Producer:
    """One board's stream to the aggregator; transitions are called from run control."""

    def __init__(self, name: str, source: Source, aggregator: str, *,
                 record: str | Path | None = None, context: zmq.Context | None = None,
                 tap_messages: int = DEFAULT_TAP_MESSAGES) -> None:
        self.name = name
        self.source = source
        self.io_group = source.io_group
        self.aggregator = aggregator
        self._ctx = context or zmq.Context.instance()
        self.record_path = Path(record) if record else None
        self._recorder: Any = None
        #: The chips' registers as ``configs`` rows (the board session's software copy), if
        #: set; otherwise what the source can tell.
        self.config_rows: Callable[[], np.ndarray | None] | None = None
        self.run_number = -1
        self.epoch = 0
        self.seq = 0
        self.offset = 0
        self.flowing = False
        self.credit = 0
        self.counters = ProducerCounters()
        self.tap_messages = int(tap_messages)
        self._outbox: deque[tuple[str, bytes, bool, Future | None]] = deque()
        self._calls = ThreadCalls()
        self._taps: list[DataTap] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> Producer:
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.connect(self.aggregator)
        self._hello()
        self._thread = threading.Thread(target=self._loop, name=f"{self.name}-data",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.source.close()
        if self._recorder is not None:
            self._recorder.close()
        self._sock.close(0)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` in the data thread and return its result (or raise its exception)."""
        return self._calls.call(fn, timeout)

    def tap_refusal(self) -> str | None:
        """Why the data this producer forwards in a run would not answer a routine's
        question (the board's rate does not follow its configuration), or None."""
        return self.source.ignores_configuration(self.run_number)

    def read_run_data(self, seconds: float, stop: threading.Event | None = None) -> list[bytes]:
        """What this producer forwards to the run over the next ``seconds``: a routine's view
        of the data while it is being recorded."""
        tap = DataTap(self.tap_messages)
        self._taps.append(tap)
        try:
            return tap.take(seconds, stop)
        finally:
            self._taps.remove(tap)
            if tap.dropped:  # counted by the data thread as they happen
                log.warning("%s: a routine's copy of run %d's data dropped %d messages "
                            "(the routine reads slower than the board sends)", self.name,
                            self.run_number, tap.dropped)

    # -- transitions -------------------------------------------------------------------------
    def prepare(self, run_number: int) -> None:
        def do() -> None:
            self.run_number = run_number
            self.epoch = random.getrandbits(62)
            self.seq = 0
            self.offset = 0
            self.source.start()
            self.flowing = True
        self.call(do)

    def _snapshot(self) -> None:
        """A ``configs`` frame with the chips' registers, if the source can say them."""
        take = self.config_rows or self.source.configs
        try:
            rows = take()
        except Exception:
            log.exception("%s: no configuration snapshot", self.name)
            return
        if rows is not None and len(rows):
            self._outbox.append((KIND_CONFIGS, rows.tobytes(), False, None))

    def send_info(self, text: str) -> bool:
        """An INFO frame into the stream, in order with the data; only while data flows."""
        def do() -> bool:
            if not self.flowing:
                return False
            self._outbox.append((KIND_INFO, str(text).encode(), False, None))
            return True
        return bool(self.call(do))

    def send_data(self, messages: list[bytes]) -> bool:
        """PACMAN data messages into the stream (e.g. from a routine); only while data flows."""
        def do() -> bool:
            if not self.flowing:
                return False
            self._outbox.extend((KIND_DATA, bytes(m), False, None) for m in messages)
            return True
        return bool(self.call(do))

    def begin(self) -> None:
        def do() -> None:
            self._snapshot()
            self._outbox.append((KIND_INFO, b"Beginning run", False, None))
        self.call(do)

    def end(self, timeout: float = 3.0) -> dict[str, float]:
        """Send "Ending run" after the data already read, stop reading; wait until it is out."""
        sent: Future = Future()

        def do() -> None:
            if not self.flowing and self.run_number < 0:
                sent.set_result(None)
                return
            self._snapshot()
            self._outbox.append((KIND_INFO, b"Ending run", True, sent))
            self.flowing = False
        self.call(do)
        try:
            sent.result(timeout)
        except TimeoutError as exc:
            raise TimeoutError(
                f"{self.name}: the aggregator gave no credit for the end-of-run marker within "
                f"{timeout:g} s (is the aggregator or storage down?)") from exc
        self.call(self._stop_source)
        return self.snapshot()

    def _stop_source(self) -> None:
        self.source.stop()
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def snapshot(self) -> dict[str, float]:
        """Counters, where the stream is, and the source's own counts."""
        return {**self.counters.as_dict(), "seq": self.seq, "run_number": self.run_number,
                **self.source.counters()}

    # -- the data thread ---------------------------------------------------------------------
    def _hello(self) -> None:
        self._sock.send_multipart(ProducerHello(self.name, self.io_group).parts())
        self.counters.hellos += 1

    def _take_credit(self, timeout_ms: int) -> None:
        while self._sock.poll(timeout_ms):
            timeout_ms = 0
            try:
                self.credit += parse_credit(self._sock.recv_multipart()).nbytes
            except ProtocolError as exc:
                self.counters.bad_messages += 1
                log.warning("%s: ignored a message from the aggregator: %s", self.name, exc)

    def _wait_credit(self) -> bool:
        """Block until there is credit; False if asked to stop meanwhile."""
        if self.credit > 0:
            return True
        self.counters.credit_waits += 1
        t0 = time.monotonic()
        last_hello = t0
        while self.credit <= 0 and not self._stop.is_set():
            self._take_credit(20)
            self._calls.run_pending()
            now = time.monotonic()
            if now - last_hello > 1.0:
                self._hello()  # the aggregator may have restarted and forgotten us
                last_hello = now
        self.counters.seconds_waiting_credit += time.monotonic() - t0
        return self.credit > 0

    def _send(self, kind: str, payload: bytes, last: bool = False) -> bool:
        if not self._wait_credit():
            return False
        words = (len(payload) - HEADER_BYTES) // WORD_BYTES if kind == KIND_DATA else 0
        h = FrameHeader(self.name, self.epoch, self.seq, self.io_group, self.run_number,
                        time.time(), kind, self.offset, last)
        self._sock.send_multipart(Frame(h, payload).parts(), copy=False)
        self.seq += 1
        self.offset += max(words, 0)
        self.credit -= len(payload)
        c = self.counters
        c.frames_sent += 1
        c.bytes_sent += len(payload)
        if kind == KIND_DATA:
            c.packets_sent += max(words, 0)
        elif kind == KIND_INFO:
            c.info_frames += 1
        return True

    def _record(self, msgs: list[bytes]) -> None:
        if self.record_path is None:
            return
        if self._recorder is None:
            from larpixdaq.formats.rawfile import RawWriter

            path = str(self.record_path).replace("{run}", str(self.run_number))
            self._recorder = RawWriter(path, overwrite=True, swmr=False)
        self._recorder.append(msgs, self.io_group)
        self._recorder.flush()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._calls.run_pending()
            self._take_credit(0)
            while self._outbox:
                kind, payload, last, fut = self._outbox[0]
                if not self._send(kind, payload, last):
                    break
                self._outbox.popleft()
                if fut is not None:
                    fut.set_result(None)
            if self._stop.is_set():
                break  # never read from the board what can no longer be sent
            if not self.flowing:
                self._take_credit(20)
                continue
            msgs = self.source.read(0.02)
            if not msgs:
                continue
            self._record(msgs)
            for tap in tuple(self._taps):
                self.counters.tap_messages_dropped += tap.offer(msgs)
            for i, msg in enumerate(msgs):
                if not self._send(KIND_DATA, msg):
                    # Stopped while waiting for credit: what the board said is not sent.
                    self.counters.messages_unsent += len(msgs) - i
                    break
        self.counters.messages_unsent += len(self._outbox)


class ProducerComponent(Component):
    """A producer under run control: data flows from prepare to end; the board's
    configuration and routines are its actions (a :class:`BoardActions`, see
    :mod:`larpixdaq.pipeline.boardactions`)."""

    role = "producer"

    def __init__(self, name: str, core: str, producer: Producer, *,
                 routine_dirs: Iterable[str | Path] = (), **kw: Any) -> None:
        super().__init__(name, core, **kw)
        self.producer = producer
        self._unsent_before = 0.0  # messages_unsent when this run was prepared
        self.board = BoardActions(producer, name=name, log=self.log,
                                  routine_dirs=routine_dirs)
        self.register_actions_of(self.board)

    def counters(self) -> dict[str, Any]:
        return {**self.producer.snapshot(), **self.board.counters()}

    def on_prepare(self, run: RunInfo) -> dict | None:
        self._unsent_before = self.producer.counters.messages_unsent
        self.producer.prepare(run.run_number)
        return None

    def on_begin(self, run: RunInfo) -> dict | None:
        self.producer.begin()
        return None

    def on_end(self, run: RunInfo | None) -> dict | None:
        counters = self.producer.end()
        # What this run read from the board and never sent (the total covers every run).
        unsent = self.producer.counters.messages_unsent - self._unsent_before
        return {"counters": {**counters, "run_messages_unsent": unsent}}

    def start(self) -> ProducerComponent:
        self.producer.start()
        super().start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.board.abort_routine("the producer is shutting down")
        super().stop(timeout)
        self.producer.stop()
