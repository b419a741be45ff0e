"""The producer: owns one board (one io_group) and forwards its PACMAN messages, framed.

Sources of messages (all give whole PACMAN ``D`` messages, bytes unchanged):

* :class:`SimSource` - the simulated board in this process; its DATA words are packed into
  messages of ``words_per_message`` words at ``rate`` packets/s (0: as fast as it goes).
  ``pool`` > 0 pre-generates that many messages and sends them round and round, so a
  benchmark measures the data path rather than the physics model;
* :class:`PacmanSource` - a PACMAN board (or the emulator) through the PACMAN client;
* :class:`ReplaySource` - a recorded raw message file, or a LArPix+HDF5 v2.4 file turned
  back into messages, at ``speed`` times real time (0: as fast as possible).

Data flows only between prepare and end (READY and RUN). Every frame gets the next ``seq``
of the stream and its word ``offset``; ``Beginning run`` goes out at begin and ``Ending
run`` (flagged ``last``) at end, in order with the data. Sending needs credit from the
aggregator; without credit the producer waits (the board's own buffers then fill: that is
the only place where data can be lost, and the PACMAN client counts it).

The software copy of the chips' configuration (see :mod:`larpixdaq.pipeline.boardactions`;
for a simulated board, what its chips hold at start-up) is sent as a ``configs`` frame just
before each run marker, so the file holds the configuration at the beginning and at the end
of the run. Configuration actions and routines run in another thread while data flows; the
sources share their board with them through ``source.lock``.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import msgpack
import numpy as np
import zmq

from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES, encode_data_message
from larpixdaq.pipeline.aggregator import CREDIT, FRAME, HELLO, pack
from larpixdaq.pipeline.boardactions import BoardActions
from larpixdaq.pipeline.frames import KIND_CONFIGS, KIND_DATA, KIND_INFO, FrameHeader, encode_header
from larpixdaq.pipeline.threadcalls import ThreadCalls
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.messages import RunInfo

log = logging.getLogger("larpixdaq.producer")

DEFAULT_WORDS_PER_MESSAGE = 4096


class Source(Protocol):
    io_group: int

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def read(self, wait: float) -> list[bytes]: ...
    def close(self) -> None: ...


PHYSICS_RATE = "physics"
"""``SimSource(rate=PHYSICS_RATE)``: the simulated board sends at the rate its physics and
configuration give, not at a rate fixed by the operator."""
PHYSICS_STEP = 0.01
MAX_PHYSICS_STEP = 0.5


class SimSource:
    """Messages from a :class:`~larpixdaq.boards.simboard.SimulatedBoard` (see module doc)."""

    def __init__(self, io_group: int = 1, *, rate: float | str = 0.0, seed: int = 0,
                 words_per_message: int = DEFAULT_WORDS_PER_MESSAGE, tiles: int = 1,
                 pool: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        """``rate``: packets per second (0: as fast as possible), or ``"physics"``: the
        board's own rate, which follows its configuration (thresholds, masks, test pulses),
        with simulated time kept to the wall clock."""
        from larpixdaq.boards.simboard import SimulatedBoard

        self.io_group = io_group
        self.physics = rate == PHYSICS_RATE
        self.rate = 0.0 if self.physics else float(rate)
        self._clock = clock
        self.words_per_message = int(words_per_message)
        self.board = SimulatedBoard(io_group, tiles=tiles, seed=seed).bring_up_all()
        # The board is shared with configuration actions and routines (another thread).
        self.lock = threading.RLock()
        self._pool = [self._make(self.words_per_message) for _ in range(pool)]
        self._pool_at = 0
        self._t_last = time.monotonic()
        self._budget = 0.0
        # Messages the board sent while a configuration action advanced its time.
        self._operations_output: deque[bytes] = deque()
        self._flowing = False
        self.operations_messages_dropped = 0

    def board_output(self, message: bytes) -> None:
        """Data the board sent during a configuration action or routine: part of the run
        while data flows (as a real board's would be); outside READY/RUN nothing is
        recorded, and those messages are counted."""
        if self._flowing:
            self._operations_output.append(message)
        else:
            self.operations_messages_dropped += 1

    def _make(self, n: int) -> bytes:
        with self.lock:
            words = self.board.generate_packets(n)[:n]
        return encode_data_message(int(time.time()), words)

    def start(self) -> None:
        self._t_last = self._clock()
        self._budget = 0.0
        self._flowing = True

    def stop(self) -> None:
        self._flowing = False

    def read(self, wait: float) -> list[bytes]:
        if self._operations_output:
            out = []
            while self._operations_output:
                out.append(self._operations_output.popleft())
            return out
        if self.physics:
            return self._read_physics(wait)
        n_msgs = 8
        if self.rate > 0:
            now = time.monotonic()
            self._budget = min(self._budget + (now - self._t_last) * self.rate,
                               self.rate * 0.5 + self.words_per_message)
            self._t_last = now
            n_msgs = int(self._budget // self.words_per_message)
            if n_msgs == 0:
                # Low rates: send what has accumulated after a short wait, in smaller messages.
                time.sleep(min(wait, self.words_per_message / self.rate))
                now = time.monotonic()
                self._budget += (now - self._t_last) * self.rate
                self._t_last = now
                n = int(min(self._budget, self.words_per_message))
                if n <= 0:
                    return []
                self._budget -= n
                return [self._make(n)]
            self._budget -= n_msgs * self.words_per_message
        if self._pool:
            out = []
            for _ in range(n_msgs):
                out.append(self._pool[self._pool_at])
                self._pool_at = (self._pool_at + 1) % len(self._pool)
            return out
        with self.lock:
            words = self.board.generate_packets(n_msgs * self.words_per_message)
        stamp = int(time.time())
        k = self.words_per_message
        return [encode_data_message(stamp, words[i:i + k])
                for i in range(0, n_msgs * k, k)]

    def _read_physics(self, wait: float) -> list[bytes]:
        """Everything the board sent since the last read, its time advanced to the wall
        clock (at most ``MAX_PHYSICS_STEP`` at once: after a long stall the simulation
        falls behind the wall clock rather than losing what it would have sent)."""
        dt = self._clock() - self._t_last
        if dt < PHYSICS_STEP:
            time.sleep(max(0.0, min(wait, PHYSICS_STEP - dt)))
            dt = self._clock() - self._t_last
        dt = min(dt, MAX_PHYSICS_STEP)
        if dt <= 0:
            return []
        self._t_last += dt
        with self.lock:
            words = self.board.generate(dt)
        stamp = int(time.time())
        k = self.words_per_message
        return [encode_data_message(stamp, words[i:i + k]) for i in range(0, len(words), k)]

    def close(self) -> None:
        pass

    def configs(self) -> np.ndarray:
        """The chips' registers now, as ``configs`` rows (the run's configuration snapshot)."""
        from larpixdaq.formats.rows import CONFIGS_DTYPE

        chips = self.board.chips
        with self.lock:
            regs = np.asarray(chips.registers, dtype=np.uint8).copy()
        rows = np.zeros(chips.n, dtype=CONFIGS_DTYPE)
        rows["timestamp"] = int(time.time())
        rows["io_group"] = self.io_group
        rows["io_channel"] = chips.io_channel
        rows["chip_id"] = chips.design_id
        rows["registers"][:, : regs.shape[1]] = regs
        return rows


class PacmanSource:
    """A PACMAN board's data subscription (configuration is done elsewhere, by routines)."""

    def __init__(self, io_group: int, host: str = "127.0.0.1", cmd_port: int = 5555,
                 data_port: int = 5556) -> None:
        from larpixdaq.boards.pacman_client import PacmanClient

        self.io_group = io_group
        self.client = PacmanClient(io_group, host, cmd_port, data_port)
        # The client's sockets are shared with configuration actions (another thread).
        self.lock = threading.RLock()

    def start(self) -> None:
        with self.lock:
            self.client.start_data()

    def stop(self) -> None:
        with self.lock:
            self.client.stop_data()

    def read(self, wait: float) -> list[bytes]:
        with self.lock:
            return self.client.recv_messages(timeout=wait)

    def close(self) -> None:
        self.client.close()


class ReplaySource:
    """A recorded file played back (raw message file or LArPix+HDF5 v2.4)."""

    def __init__(self, path: str | Path, io_group: int = 1, *, speed: float = 0.0,
                 loop: bool = False) -> None:
        from larpixdaq.formats.rawfile import is_raw_file

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"replay file {self.path} does not exist")
        self.io_group = io_group
        self.speed = float(speed)
        self.loop = loop
        self._raw = is_raw_file(self.path)
        self._iter: Any = None
        self._t0_wall = 0.0
        self._t0_data: float | None = None
        self.finished = False

    def start(self) -> None:
        self._iter = self._messages()
        self._t0_wall = time.monotonic()
        self._t0_data = None
        self.finished = False

    def stop(self) -> None:
        self._iter = None

    def _messages(self) -> Any:
        while True:
            if self._raw:
                from larpixdaq.formats.rawfile import open_raw

                with open_raw(self.path) as f:
                    for msgs, _ in f.iter_chunks(256):
                        yield msgs
            else:
                from larpixdaq.formats.hdf5file import open_file

                with open_file(self.path) as f:
                    for rows in f.iter_packets(1 << 16):
                        yield rows_to_messages(rows)
            if not self.loop:
                return

    def read(self, wait: float) -> list[bytes]:
        if self._iter is None or self.finished:
            time.sleep(wait)
            return []
        try:
            msgs = next(self._iter)
        except StopIteration:
            self.finished = True
            return []
        if self.speed > 0 and msgs:
            stamp = int.from_bytes(msgs[-1][1:5], "little")
            if self._t0_data is None:
                self._t0_data = stamp
            due = self._t0_wall + (stamp - self._t0_data) / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return msgs

    def close(self) -> None:
        self._iter = None


def rows_to_messages(rows: np.ndarray, max_words: int = 0xFFFF) -> list[bytes]:
    """Rebuild PACMAN ``D`` messages from ``packets`` rows of a v2.4 file.

    Each type-4 row starts a message (its timestamp is the message time); chip rows become
    DATA words (packet bits rebuilt from the columns), type-6/7 rows SYNC/TRIG words; type-5
    rows (logged text) are skipped. Rows before the first type-4 row form a message of time 0.
    Config packets come back with their unused bits zero (v2.4 rows do not keep them).
    """
    from larpixdaq.formats.packets import encode_packets
    from larpixdaq.formats.pacman import WORD_DATA, WORD_DTYPE, WORD_SYNC, WORD_TRIG
    from larpixdaq.formats.rows import MESSAGE, SYNC, TIMESTAMP, TRIGGER

    ptype = rows["packet_type"]
    keep = ptype != MESSAGE
    rows, ptype = rows[keep], ptype[keep]
    starts = np.flatnonzero(ptype == TIMESTAMP)
    words_sel = ptype != TIMESTAMP
    words = np.zeros(int(words_sel.sum()), dtype=WORD_DTYPE)
    wr = rows[words_sel]
    wt = ptype[words_sel]
    chip = wt < TIMESTAMP
    if chip.any():
        c = wr[chip]
        data = c["packet_type"] == 0
        pk = np.zeros(len(c), np.uint64)
        if data.any():
            d = c[data]
            pk[data] = encode_packets(
                packet_type=0, chip_id=d["chip_id"], channel_id=d["channel_id"],
                timestamp=d["timestamp"] & 0x7FFFFFFF, first_packet=d["first_packet"],
                dataword=d["dataword"], trigger_type=d["trigger_type"],
                local_fifo=d["local_fifo"], shared_fifo=d["shared_fifo"],
                downstream_marker=d["downstream_marker"], parity=d["parity"])
        if (~data).any():
            g = c[~data]
            pk[~data] = encode_packets(
                packet_type=g["packet_type"], chip_id=g["chip_id"],
                register_address=g["register_address"], register_data=g["register_data"],
                downstream_marker=g["downstream_marker"], parity=g["parity"])
        cw = words[chip]
        cw["type"] = WORD_DATA
        cw["io_channel"] = c["io_channel"]
        cw["receipt_timestamp"] = c["receipt_timestamp"]
        cw["packet"] = pk
        words[chip] = cw
    for kind, code in ((SYNC, WORD_SYNC), (TRIGGER, WORD_TRIG)):
        sel = wt == kind
        if sel.any():
            tw = words[sel]
            tw["type"] = code
            tw["sub"] = wr["trigger_type"][sel]
            tw["time"] = wr["timestamp"][sel].astype(np.uint32)
            if kind == SYNC:
                tw["clk_source"] = wr["dataword"][sel] & 1
            words[sel] = tw
    # Word index where each message begins: rows before it that are words.
    word_pos = np.cumsum(words_sel) - words_sel
    bounds = [0, *word_pos[starts].tolist(), len(words)]
    stamps = [0, *rows["timestamp"][starts].tolist()]
    out = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        if i == 0 and a == b:
            continue  # no words before the first type-4 row
        for s in range(a, max(b, a + 1), max_words):
            out.append(encode_data_message(int(stamps[i]), words[s:min(b, s + max_words)]))
    return out


class DataTap:
    """A copy of what a producer forwards, for a routine that analyses a run's data while
    it is recorded. Bounded, and never waited for (the run comes first): what does not fit
    is counted in ``dropped`` and the routine says so."""

    def __init__(self, max_messages: int = 4096) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(max_messages)
        self.dropped = 0

    def offer(self, messages: list[bytes]) -> None:
        for message in messages:
            try:
                self._queue.put_nowait(message)
            except queue.Full:
                self.dropped += 1

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
                 record: str | Path | None = None, context: zmq.Context | None = None
                 ) -> None:
        self.name = name
        self.source = source
        self.io_group = source.io_group
        self.aggregator = aggregator
        self._ctx = context or zmq.Context.instance()
        self.record_path = Path(record) if record else None
        self._recorder: Any = None
        #: The chips' registers as ``configs`` rows (the software copy), if set; otherwise
        #: what the source can tell.
        self.config_rows: Callable[[], np.ndarray] | None = None
        self.run_number = -1
        self.epoch = 0
        self.seq = 0
        self.offset = 0
        self.flowing = False
        self.credit = 0
        self.counters: dict[str, float] = dict.fromkeys(
            ["frames_sent", "packets_sent", "bytes_sent", "info_frames", "credit_waits",
             "seconds_waiting_credit", "hellos", "bad_messages", "messages_unsent"], 0)
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
        if isinstance(self.source, SimSource) and not self.source.physics:
            return (f"the simulated board sends at a fixed rate in run {self.run_number}, "
                    "not at the rate its configuration gives; end the run first, or take "
                    "runs with --sim-rate physics")
        if isinstance(self.source, ReplaySource):
            return f"run {self.run_number} replays a file, whose data ignores the configuration"
        return None

    def read_run_data(self, seconds: float, stop: threading.Event | None = None) -> list[bytes]:
        """What this producer forwards to the run over the next ``seconds``: a routine's view
        of the data while it is being recorded."""
        tap = DataTap()
        self._taps.append(tap)
        try:
            return tap.take(seconds, stop)
        finally:
            self._taps.remove(tap)
            if tap.dropped:
                self.counters["tap_messages_dropped"] += tap.dropped

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
        take = self.config_rows or getattr(self.source, "configs", None)
        if take is None:
            return
        try:
            rows = take()
        except Exception:
            log.exception("%s: no configuration snapshot", self.name)
            return
        if len(rows):
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
        out = {**self.counters, "seq": self.seq, "run_number": self.run_number}
        outside = getattr(self.source, "operations_messages_dropped", None)
        if outside is not None:
            out["board_messages_outside_run"] = outside
        return out

    # -- the data thread ---------------------------------------------------------------------
    def _hello(self) -> None:
        self._sock.send_multipart([HELLO, pack({"source": self.name,
                                                "io_group": self.io_group})])
        self.counters["hellos"] += 1

    def _take_credit(self, timeout_ms: int) -> None:
        while self._sock.poll(timeout_ms):
            timeout_ms = 0
            parts = self._sock.recv_multipart()
            if parts[0] == CREDIT and len(parts) == 2:
                try:
                    self.credit += int(msgpack.unpackb(parts[1])["bytes"])
                except (ValueError, KeyError, TypeError, msgpack.UnpackException):
                    self.counters["bad_messages"] += 1
                    log.warning("%s: ignored a malformed credit message", self.name)
            else:
                self.counters["bad_messages"] += 1
                log.warning("%s: ignored an unexpected message %r of %d parts from the "
                            "aggregator", self.name, parts[0][:16], len(parts))

    def _wait_credit(self) -> bool:
        """Block until there is credit; False if asked to stop meanwhile."""
        if self.credit > 0:
            return True
        self.counters["credit_waits"] += 1
        t0 = time.monotonic()
        last_hello = t0
        while self.credit <= 0 and not self._stop.is_set():
            self._take_credit(20)
            self._calls.run_pending()
            now = time.monotonic()
            if now - last_hello > 1.0:
                self._hello()  # the aggregator may have restarted and forgotten us
                last_hello = now
        self.counters["seconds_waiting_credit"] += time.monotonic() - t0
        return self.credit > 0

    def _send(self, kind: str, payload: bytes, last: bool = False) -> bool:
        if not self._wait_credit():
            return False
        words = (len(payload) - HEADER_BYTES) // WORD_BYTES if kind == KIND_DATA else 0
        h = FrameHeader(self.name, self.epoch, self.seq, self.io_group, self.run_number,
                        time.time(), kind, self.offset, last)
        self._sock.send_multipart([FRAME, encode_header(h), payload], copy=False)
        self.seq += 1
        self.offset += max(words, 0)
        self.credit -= len(payload)
        c = self.counters
        c["frames_sent"] += 1
        c["bytes_sent"] += len(payload)
        if kind == KIND_DATA:
            c["packets_sent"] += max(words, 0)
        elif kind == KIND_INFO:
            c["info_frames"] += 1
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
                tap.offer(msgs)
            for i, msg in enumerate(msgs):
                if not self._send(KIND_DATA, msg):
                    # Stopped while waiting for credit: what the board said is not sent.
                    self.counters["messages_unsent"] += len(msgs) - i
                    break
        self.counters["messages_unsent"] += len(self._outbox)


class ProducerComponent(BoardActions, Component):
    """A producer under run control: data flows from prepare to end; the board's
    configuration and routines are its actions (see :mod:`larpixdaq.pipeline.boardactions`)."""

    role = "producer"

    def __init__(self, name: str, core: str, producer: Producer, **kw: Any) -> None:
        super().__init__(name, core, **kw)
        self.producer = producer
        self._unsent_before = 0.0  # messages_unsent when this run was prepared
        self.init_board_actions(producer)

    def counters(self) -> dict[str, Any]:
        return {**self.producer.snapshot(), **self.board_counters()}

    def on_prepare(self, run: RunInfo) -> dict | None:
        self._unsent_before = self.producer.counters["messages_unsent"]
        self.producer.prepare(run.run_number)
        return None

    def on_begin(self, run: RunInfo) -> dict | None:
        self.producer.begin()
        return None

    def on_end(self, run: RunInfo | None) -> dict | None:
        counters = self.producer.end()
        # What this run read from the board and never sent (the total covers every run).
        unsent = counters.get("messages_unsent", 0) - self._unsent_before
        return {"counters": {**counters, "run_messages_unsent": unsent}}

    def start(self) -> ProducerComponent:
        self.producer.start()
        super().start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.abort_routine("the producer is shutting down")
        super().stop(timeout)
        self.producer.stop()
