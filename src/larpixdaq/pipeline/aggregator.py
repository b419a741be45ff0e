"""The aggregator: merges the producers' frames into one lossless stream for storage.

Flow control is the ZeroMQ guide's credit-based pattern, twice:

* storage grants the aggregator credit in bytes (``HELLO`` then ``CREDIT``), and the
  aggregator sends frames only while it has credit;
* the aggregator grants each producer credit in bytes out of a fixed ``window``: the bytes it
  holds (sent to storage and not yet acknowledged, or not yet sent) plus the credit it has
  handed out never exceed the window. A producer without credit waits; nothing is dropped.

Every frame stays here until storage acknowledges it (``ACK``: the highest seq on disk per
stream). A storage that restarts says ``HELLO`` again with what its journal holds; the
aggregator forgets what is already on disk and sends the rest again, in order. Storage's
acknowledgements are relayed to the producers, which keep every frame until then too: a
producer answered by a new aggregator (another ``WELCOME`` id: this one restarted) sends
everything not acknowledged again. Frames from a producer that has not said HELLO to this
aggregator (sent to the one before) are dropped and counted (``frames_unannounced``): the
producer sends them again after the WELCOME, in order; a frame at or below its stream's
highest seq received is a duplicate and dropped (``frames_duplicate``).

Monitors get a sampled copy on a PUB socket (at most ``monitor_rate`` frames a second per
stream, with the original headers, so a monitor sees from the seq numbers how much it
missed) and a ``stats`` message every second. The messages are built and parsed by
:mod:`larpixdaq.pipeline.protocol` (see also ``docs/datapath.md``).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from larpixdaq.pipeline.addresses import DEFAULT_INLET, DEFAULT_MONITOR, DEFAULT_OUTLET
from larpixdaq.pipeline.counters import Counters
from larpixdaq.pipeline.protocol import (
    KIND_DATA,
    Ack,
    Credit,
    Frame,
    FrameHeader,
    OversizeError,
    ProducerHello,
    ProtocolError,
    Stats,
    StorageHello,
    Welcome,
    parse_producer_message,
    parse_storage_message,
    stream_seqs,
)
from larpixdaq.runcontrol.admitted import AdmittedStreams
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.security import ServerKeys, server_keys

log = logging.getLogger("larpixdaq.aggregator")

DEFAULT_WINDOW = 64 << 20
"""Bytes held for storage at most: enough to ride over storage's commit interval at full
rate, small enough that storage drains it in well under a second at the end of a run."""
MAX_PRODUCERS = 32
"""Producers that can each hold a full grant of the window at once (PACMAN boards of a large
detector); beyond this many, late joiners wait for credit to come back."""
PEER_TIMEOUT = 3.0
"""Seconds of silence after which a producer's credit comes back to the window (it said
HELLO and went away, or is idle): it gets no more until it is heard from again."""
MAX_SILENT = 1024
"""Silent producers remembered at most (the oldest are forgotten first)."""
STORAGE_TIMEOUT = 1.5
"""Seconds of silence after which another storage may take over (storage says something at
least every 0.5 s, ``storage.KEEPALIVE``); before that, a second storage's HELLO is
refused. A restarted process takes more than this to start, so it is taken at once."""
Stream = tuple[str, int]


@dataclass(slots=True)
class _Held:
    """A frame held until storage acknowledges it: its header part as the producer sent it
    (forwarded unchanged) and its payload part, with what the bookkeeping needs."""

    stream: Stream
    seq: int
    size: int
    header: FrameHeader
    raw_header: Any
    payload: Any


@dataclass
class _Producer:
    identity: bytes
    source: str
    credit_out: int = 0
    last_heard: float = field(default_factory=time.monotonic)
    #: Credit taken back when it fell silent (None: not silent); restored if it is heard
    #: from again, since it may still hold that credit.
    reclaimed: int | None = None


@dataclass
class AggregatorCounters(Counters):
    """What the aggregator counts (these names are what heartbeats, the stats the monitors
    get and the run record show)."""

    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    frames_resent: int = 0
    frames_acked: int = 0
    frames_to_monitor: int = 0
    frames_not_to_monitor: int = 0
    bad_messages: int = 0
    frames_not_admitted: int = 0
    frames_oversize: int = 0
    producer_hellos: int = 0
    producers_expired: int = 0
    producer_hellos_refused: int = 0
    storage_hellos: int = 0
    storage_hellos_refused: int = 0
    frames_unannounced: int = 0
    storage_messages_unannounced: int = 0
    frames_duplicate: int = 0
    acks_relayed: int = 0


class Aggregator:
    """The aggregator's sockets and loop (no run control: :class:`AggregatorComponent` adds it).

    ``inlet``, ``outlet`` and ``monitor`` are bind addresses (``tcp://127.0.0.1:0`` picks a
    free port; read the real ones from the attributes after :meth:`bind`).
    """

    def __init__(
        self,
        inlet: str = DEFAULT_INLET,
        outlet: str = DEFAULT_OUTLET,
        monitor: str | None = DEFAULT_MONITOR,
        *,
        window: int = DEFAULT_WINDOW,
        monitor_rate: float = 20.0,
        peer_timeout: float = PEER_TIMEOUT,
        storage_timeout: float = STORAGE_TIMEOUT,
        keys: ServerKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.inlet, self.outlet, self.monitor = inlet, outlet, monitor
        #: CURVE: with keys, every socket admits only holders of an authorised key.
        self.keys = keys
        self.window = int(window)
        # One grant is at most 1/MAX_PRODUCERS of the window: producers that joined first cannot
        # hold the whole window while a slow board takes minutes to use its credit, so every
        # io_group of a detector (the 2x2 has 8) gets credit as soon as it joins.
        self.max_grant = max(1, min(self.window // MAX_PRODUCERS, 16 << 20))
        self.monitor_interval = 1.0 / monitor_rate if monitor_rate > 0 else float("inf")
        self._ctx = context or zmq.Context.instance()
        self.inflight: deque[_Held] = deque()
        self.unsent: deque[_Held] = deque()
        self.held_bytes = 0
        self.acked: dict[Stream, int] = {}
        self.producers: dict[bytes, _Producer] = {}
        self.sources: dict[str, bytes] = {}  # producer name -> its identity now
        #: Random per process: tells a producer whether it talks to the aggregator it sent
        #: its unacknowledged frames to.
        self.instance = random.getrandbits(62)
        self.storage: bytes | None = None
        self.storage_credit = 0
        self.peer_timeout = peer_timeout
        self.storage_timeout = storage_timeout
        self._storage_heard = 0.0
        # The run's admitted streams and, per stream, the producer connection that sends it:
        # replaced together (one assignment) when a run is prepared.
        self._admission: tuple[AdmittedStreams | None, dict[Stream, bytes]] = (None, {})
        self._refusals_logged: set[str] = set()
        self._last_monitor: dict[Stream, float] = {}
        self.counters = AggregatorCounters()
        self.per_stream: dict[Stream, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- sockets ---------------------------------------------------------------------------
    def bind(self) -> Aggregator:
        self._in = self._ctx.socket(zmq.ROUTER)
        self._out = self._ctx.socket(zmq.ROUTER)
        for s in (self._in, self._out):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVHWM, 0)
            s.setsockopt(zmq.SNDHWM, 0)
            if self.keys is not None:
                self.keys.apply(s, self._ctx)
        self._in.bind(self.inlet)
        self.inlet = self._in.getsockopt_string(zmq.LAST_ENDPOINT)
        self._out.bind(self.outlet)
        self.outlet = self._out.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pub = None
        if self.monitor:
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.setsockopt(zmq.LINGER, 0)
            if self.keys is not None:  # monitors with a key only
                self.keys.apply(self._pub, self._ctx)
            self._pub.setsockopt(zmq.SNDHWM, 200)
            self._pub.bind(self.monitor)
            self.monitor = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        return self

    def endpoints(self) -> dict[str, str]:
        out = {"aggregator_in": self.inlet, "aggregator_out": self.outlet}
        if self.monitor:
            out["monitor_pub"] = self.monitor
        return out

    def start(self) -> Aggregator:
        if not hasattr(self, "_in"):
            self.bind()
        self._thread = threading.Thread(target=self.loop, name="aggregator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for s in (self._in, self._out, self._pub):
            if s is not None:
                s.close(0)
        if self.keys is not None:
            self.keys.close()

    # -- the loop --------------------------------------------------------------------------
    def loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._in, zmq.POLLIN)
        poller.register(self._out, zmq.POLLIN)
        next_stats = time.monotonic() + 1.0
        while not self._stop.is_set():
            events = dict(poller.poll(50))
            if self._out in events:
                self._drain(self._out, self._on_storage)
            if self._in in events:
                self._drain(self._in, self._on_producer)
            self._send_to_storage()
            self._grant()
            now = time.monotonic()
            if now >= next_stats:
                next_stats = now + 1.0
                self._publish_stats()

    def _drain(self, sock: zmq.Socket, handler: Any, limit: int = 256) -> None:
        for _ in range(limit):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                handler(parts[0].bytes, parts[1:])
            except OversizeError as exc:
                self.counters.frames_oversize += 1
                log.warning("aggregator: refused an oversize message: %s", exc)
            except ProtocolError as exc:
                self.counters.bad_messages += 1
                log.warning("aggregator: rejected a malformed message: %s", exc)

    # -- producers -------------------------------------------------------------------------
    def admit(self, admitted: AdmittedStreams | None) -> None:
        """Accept frames only of the streams of ``admitted`` from now on (None: any, as
        without run control). Called when a run is prepared; the table stays until the next."""
        self._admission = (admitted, {})
        self._refusals_logged = set()

    def _refusal(self, identity: bytes, source: str, header: FrameHeader) -> str | None:
        """Why this frame may not enter the run, or None: it must belong to an admitted
        stream, come from the connection that said HELLO as its source (taken over only
        from a silent one), and each stream comes from one connection (the first that sent
        it), so no other peer can put frames (or a forged seq) into a producer's stream, nor
        open a stream of its own in a producer's name."""
        admitted, senders = self._admission
        if admitted is None:
            return None
        why = admitted.refusal(header.source, header.epoch, header.io_group, header.run)
        if why is not None:
            return why
        if source != header.source:
            return f"a frame of {header.source[:64]} from the connection of {source[:64]}"
        sender = senders.setdefault(header.stream, identity)
        if sender != identity:
            return f"stream {header.source}/{header.epoch} is sent by another connection"
        return None

    def _on_producer(self, identity: bytes, parts: list[zmq.Frame]) -> None:
        msg = parse_producer_message(parts)
        if isinstance(msg, Frame):
            header, size = msg.header, msg.size
            p = self.producers.get(identity)
            if p is None:
                # Sent before its HELLO to us (to the aggregator before this one): it comes
                # again after our WELCOME, in order.
                self.counters.frames_unannounced += 1
                return
            if p.reclaimed is not None:  # silent for a while, and back: it holds this still
                p.credit_out, p.reclaimed = p.reclaimed, None
            p.credit_out = max(0, p.credit_out - size)
            p.last_heard = time.monotonic()
            # Before the duplicate check: a forged seq must not make real frames duplicates.
            why = self._refusal(identity, p.source, header)
            if why is not None:
                self.counters.frames_not_admitted += 1
                if why not in self._refusals_logged and len(self._refusals_logged) < 64:
                    self._refusals_logged.add(why)  # once per reason and run: no flood
                    log.warning("aggregator: refused a frame: %s", why)
                return
            if header.seq <= self.per_stream.get(header.stream, -1):
                self.counters.frames_duplicate += 1
                return
            held = _Held(header.stream, header.seq, size, header, msg.raw_header, msg.payload)
            with self._lock:
                self.unsent.append(held)
                self.held_bytes += size
            c = self.counters
            c.frames_in += 1
            c.bytes_in += size
            self.per_stream[header.stream] = header.seq
            self._sample(msg)
        else:
            self._producer_hello(identity, msg)

    def _producer_hello(self, identity: bytes, hello: ProducerHello) -> None:
        if self._hello_refused(identity, hello.source):
            return
        for ident, p in list(self.producers.items()):
            if p.source == hello.source:
                del self.producers[ident]  # the same producer, reconnected
        self.producers[identity] = _Producer(identity, hello.source)
        self.sources[hello.source] = identity
        # The source's streams go with it: a restarted producer sends again what its dead
        # predecessor logged and ends that stream (see framelog).
        senders = self._admission[1]
        for stream in [s for s in senders if s[0] == hello.source]:
            senders[stream] = identity
        self.counters.producer_hellos += 1
        self._in.send_multipart([identity, *Welcome(self.instance).parts()])
        # What storage has of this producer's streams, so it can let go at once.
        self._relay(tuple((s, e, q) for (s, e), q in self.acked.items() if s == hello.source))

    def _hello_refused(self, identity: bytes, source: str) -> bool:
        """During a run, a source admitted to it is taken over by another connection only
        once the one sending it has been silent for ``peer_timeout`` (the process died or
        restarted): a HELLO in a producer's name cannot cut a live producer off."""
        if self._admission[0] is None:
            return False
        current = self.producers.get(self.sources.get(source, b""))
        if (current is None or current.identity == identity or current.reclaimed is not None
                or time.monotonic() - current.last_heard > self.peer_timeout):
            return False
        self.counters.producer_hellos_refused += 1
        if self.counters.producer_hellos_refused == 1:
            log.warning("aggregator: refused a HELLO in the name of %s, which another "
                        "connection sends and was heard from lately", source[:64])
        return True

    def _expire(self, now: float) -> None:
        """Take back the credit of producers not heard from for ``peer_timeout``: hundreds
        of HELLOs from processes that went away must not keep the window shared out among
        them. A silent producer gets no credit until it is heard from again; the oldest
        silent ones beyond :data:`MAX_SILENT` are forgotten."""
        silent = []
        for p in self.producers.values():
            if p.reclaimed is None and now - p.last_heard > self.peer_timeout:
                p.reclaimed, p.credit_out = p.credit_out, 0
                self.counters.producers_expired += 1
            if p.reclaimed is not None:
                silent.append(p)
        if len(silent) > MAX_SILENT:
            silent.sort(key=lambda p: p.last_heard)
            for p in silent[:len(silent) - MAX_SILENT]:
                del self.producers[p.identity]

    def _live(self) -> list[_Producer]:
        """Producers that get credit: heard from lately and, while a run's table is set,
        of an admitted source (others would hold credit they cannot use)."""
        admitted = self._admission[0]
        return [p for p in self.producers.values() if p.reclaimed is None
                and (admitted is None or p.source in admitted.sources)]

    def _grant(self) -> None:
        """Top producers up to their share of the window, in chunks worth a message."""
        self._expire(time.monotonic())
        live = self._live()
        if not live:
            return
        # Small grants: credit handed out cannot be taken back, so no producer may sit on
        # much of the window when another one joins.
        share = min(self.window // len(live), self.max_grant)
        room = self.window - self.held_bytes - sum(p.credit_out for p in self.producers.values())
        for p in live:
            want = min(share - p.credit_out, room)
            if want >= max(1, share // 8):
                p.credit_out += want
                room -= want
                self._in.send_multipart([p.identity, *Credit(want).parts()])

    def _sample(self, frame: Frame) -> None:
        """Publish a copy to monitors: data frames at most ``monitor_rate`` a second per
        stream; the rare run markers and config snapshots always, so monitors show them."""
        if self._pub is None:
            return
        now = time.monotonic()
        stream = frame.header.stream
        is_data = frame.header.kind == KIND_DATA
        if is_data and now - self._last_monitor.get(stream, -1e9) < self.monitor_interval:
            self.counters.frames_not_to_monitor += 1
            return
        try:
            self._pub.send_multipart(frame.parts(), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.counters.frames_not_to_monitor += 1
            return
        if is_data:
            self._last_monitor[stream] = now
        self.counters.frames_to_monitor += 1

    def _publish_stats(self) -> None:
        if self._pub is None:
            return
        stats = Stats(self.counters.as_dict(), stream_seqs(self.per_stream))
        with contextlib.suppress(zmq.Again):
            self._pub.send_multipart(stats.parts(), zmq.NOBLOCK)

    # -- storage ---------------------------------------------------------------------------
    def _on_storage(self, identity: bytes, parts: list[zmq.Frame]) -> None:
        msg = parse_storage_message(parts)
        if identity == self.storage:
            self._storage_heard = time.monotonic()
        if isinstance(msg, StorageHello):
            self._storage_hello(identity, msg)
        elif identity != self.storage:
            # A storage that has not said HELLO to this aggregator (it restarted) or one
            # replaced by another: nothing to take from it, nothing lost (it says HELLO).
            self.counters.storage_messages_unannounced += 1
        elif isinstance(msg, Credit):
            self.storage_credit += msg.nbytes
        elif isinstance(msg, Ack):
            for source, epoch, seq in msg.streams:
                stream = (source, epoch)
                if seq > self.acked.get(stream, -1):
                    self.acked[stream] = seq
            self._release()
            self._relay(msg.streams)

    def _relay(self, streams: tuple[tuple[str, int, int], ...]) -> None:
        """Storage's acknowledgements to the producers whose streams they name."""
        by_source: dict[str, list[tuple[str, int, int]]] = {}
        for entry in streams:
            by_source.setdefault(entry[0], []).append(entry)
        for source, entries in by_source.items():
            identity = self.sources.get(source)
            if identity is not None and identity in self.producers:
                self._in.send_multipart([identity, *Ack(tuple(entries)).parts()])
                self.counters.acks_relayed += 1

    def _storage_hello(self, identity: bytes, hello: StorageHello) -> None:
        """A (new or restarted) storage: forget what it has, send it all the rest again.

        Another connection takes the place of the storage only once the one we talk to has
        been silent for ``storage_timeout`` (it died or restarted): a second process saying
        HELLO cannot divert the run's data from a storage that is alive."""
        now = time.monotonic()
        if (self.storage is not None and identity != self.storage
                and now - self._storage_heard < self.storage_timeout):
            self.counters.storage_hellos_refused += 1
            if self.counters.storage_hellos_refused == 1:
                log.warning("aggregator: refused a second storage's HELLO (the storage it "
                            "sends to was heard %.1f s ago)", now - self._storage_heard)
            return
        self._storage_heard = now
        for source, epoch, seq in hello.committed:
            stream = (source, epoch)
            self.acked[stream] = max(self.acked.get(stream, -1), seq)
        with self._lock:
            resend = [h for h in self.inflight if h.seq > self.acked.get(h.stream, -1)]
            self.counters.frames_resent += len(resend)
            dropped = len(self.inflight) - len(resend)
            self.counters.frames_acked += dropped
            self.held_bytes -= sum(h.size for h in self.inflight) - sum(h.size for h in resend)
            self.inflight.clear()
            self.unsent.extendleft(reversed(resend))
        self.storage = identity
        self.storage_credit = hello.credit
        self.counters.storage_hellos += 1
        self._relay(hello.committed)

    def _release(self) -> None:
        with self._lock:
            while self.inflight:
                h = self.inflight[0]
                if h.seq > self.acked.get(h.stream, -1):
                    break
                self.inflight.popleft()
                self.held_bytes -= h.size
                self.counters.frames_acked += 1

    def _send_to_storage(self) -> None:
        if self.storage is None:
            return
        while self.unsent and self.storage_credit > 0:
            with self._lock:
                h = self.unsent.popleft()
                self.inflight.append(h)
            frame = Frame(h.header, h.payload, h.raw_header)
            self._out.send_multipart([self.storage, *frame.parts()], copy=False)
            self.storage_credit -= h.size
            self.counters.frames_out += 1

    # -- reporting -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, int]:
        """Counters plus what is held now."""
        with self._lock:
            held = {"frames_held": len(self.inflight) + len(self.unsent),
                    "bytes_held": self.held_bytes}
        live = sum(1 for p in self.producers.values() if p.reclaimed is None)
        return {**self.counters.as_dict(), **held, "producers": live,
                "producers_silent": len(self.producers) - live,
                "storage_connected": int(self.storage is not None)}


class AggregatorComponent(Component):
    """The aggregator under run control: its addresses are advertised through the core."""

    role = "aggregator"

    def __init__(self, name: str, core: str, aggregator: Aggregator, **kw: Any) -> None:
        if not hasattr(aggregator, "_in"):
            if aggregator.keys is None:  # the component's keys ($LARPIX_DAQ_KEYS by default)
                aggregator.keys = server_keys(kw.get("keys"))
            aggregator.bind()
        self.aggregator = aggregator
        super().__init__(name, core, endpoints=aggregator.endpoints(), **kw)
        self._base = AggregatorCounters()

    def counters(self) -> dict[str, int]:
        return self.aggregator.snapshot()

    def on_prepare(self, run: Any) -> dict | None:
        self._base = self.aggregator.counters.copy()
        # Only the streams the core admitted enter this run.
        self.aggregator.admit(AdmittedStreams.from_run(run.run_number, run.admitted))
        return None

    def on_end(self, run: Any) -> dict | None:
        now = self.aggregator.snapshot()
        per_run = self.aggregator.counters.since(self._base)
        return {"counters": {**now, **{f"run_{k}": v for k, v in per_run.items()}}}

    def start(self) -> AggregatorComponent:
        self.aggregator.start()
        super().start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self.aggregator.stop()
