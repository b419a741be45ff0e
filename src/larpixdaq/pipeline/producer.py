"""The producer: owns one board (one io_group) and forwards its PACMAN messages, framed.

Its messages come from a :class:`~larpixdaq.pipeline.sources.Source`: the simulated board,
a PACMAN board or a replayed file (see :mod:`larpixdaq.pipeline.sources`); all give whole
PACMAN ``D`` messages, bytes unchanged. Frames and the credit they need are messages of
:mod:`larpixdaq.pipeline.protocol`.

The board is read out only between begin and end (RUN): a prepare opens the run's stream
(a new epoch, seq 0) but reads nothing, so no data of the board precedes ``Beginning run``
however long the operator waits between prepare and begin. What does reach the stream in
READY (what the board sent during a configuration action, data a routine sends) is kept,
never dropped, and counted in ``messages_before_begin``; in the file it stands before the
``Beginning run`` marker. Every frame gets the next ``seq`` of the stream and its word
``offset``; ``Beginning run`` goes out at begin and ``Ending run`` (flagged ``last``) at end,
in order with the data. One exception to reading only in RUN: a process taking over a dead
predecessor's unfinished stream reads a board that runs on its own from its start, and what
it read before run control brought it back goes into that run after ``Beginning run``, or
into none (see :mod:`~larpixdaq.pipeline.earlyread`). Sending needs credit from the
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
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES
from larpixdaq.pipeline import earlyread, framelog, gapmark
from larpixdaq.pipeline.backlog import DEFAULT_HOLD_BYTES, Backlog, Pending
from larpixdaq.pipeline.counters import Counters
from larpixdaq.pipeline.datatap import DEFAULT_TAP_MESSAGES, DataTap
from larpixdaq.pipeline.framelog import RESEND, STALE, FrameLog, LogFiles
from larpixdaq.pipeline.protocol import (
    FRAME,
    KIND_CONFIGS,
    KIND_DATA,
    KIND_INFO,
    Ack,
    Credit,
    FrameHeader,
    ProducerHello,
    ProtocolError,
    Welcome,
    encode_header,
    parse_aggregator_message,
)
from larpixdaq.pipeline.sources import Source
from larpixdaq.pipeline.threadcalls import ThreadCalls
from larpixdaq.runcontrol import admitted
from larpixdaq.runcontrol.admitted import EPOCH_BITS
from larpixdaq.runcontrol.security import ClientKeys

log = logging.getLogger("larpixdaq.producer")

END_PATIENCE = 20.0
"""Seconds without progress (a frame sent or acknowledged) after which the end of a run gives
up waiting for the stream's last frame to be committed."""
HELLO_INTERVAL = 1.0
"""Seconds without an answer (WELCOME) or without credit after which a producer says HELLO
again: the aggregator may have restarted and forgotten it. An idle producer (nothing sent
for this long, nothing waiting) says HELLO as often, so the aggregator hears from it: a
silent one loses its credit and, during a run, its name to another connection."""
ACK_SILENCE = 2.0
"""Seconds without an acknowledgement, with frames sent and not acknowledged, after which a
producer says HELLO again (storage commits every 0.2 s): the aggregator that had them may
be gone, and with nothing left to send no lack of credit would tell."""

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
    messages_before_begin: int = 0  # kept in the run, before its "Beginning run" marker
    tap_messages_dropped: int = 0
    frames_acked: int = 0
    frames_resent: int = 0
    frames_not_resent: int = 0  # of those, storage had them already when their turn came
    aggregator_changes: int = 0
    data_gaps: int = 0  # holes in the board's data left by a dead process of this name
    spill_files_orphaned: int = 0  # spill files a dead process of this name left (kept)
    frames_recovered: int = 0  # frames a dead process of this name logged, queued again
    packets_recovered: int = 0  # the PACMAN words in them
    frames_stale: int = 0  # frames of a finished run a dead process logged (kept, not sent)
    # Taking over a dead process's unfinished stream, the board is read before the
    # catch-up's begin (see earlyread): what went into the run, and what was dropped.
    messages_read_early: int = 0
    early_messages_outside_run: int = 0  # its run was over, or not begun here
    early_messages_over_budget: int = 0  # beyond the hold budget (early reading stopped)


class Producer:
    """One board's stream to the aggregator; transitions are called from run control.

    Every frame is kept until storage has committed it (the aggregator relays storage's
    ``ACK``): frames waiting to be sent are in :attr:`backlog` (memory up to ``hold_bytes``,
    then a spill file in ``spill_dir``), frames sent and not yet acknowledged in
    :attr:`unacked`, and every frame is in the frame log in ``state_dir`` before it is sent
    (:mod:`~larpixdaq.pipeline.framelog`): a successor of the same name sends again what a
    killed one had not got committed. An aggregator that answers HELLO with another
    ``WELCOME`` id than before is a new one: everything unacknowledged goes out again, in
    order, ahead of the rest (storage drops what it already has by ``(source, epoch,
    seq)``). A source whose board runs on its own (a PACMAN, a simulated board at a set
    rate) is read whether or not there is credit, so the board never drops; one that waits
    for its reader (a simulated board as fast as it goes, a file) is read only when the
    backlog is empty.
    """

    def __init__(self, name: str, source: Source, aggregator: str, *,
                 record: str | Path | None = None, context: zmq.Context | None = None,
                 tap_messages: int = DEFAULT_TAP_MESSAGES,
                 hold_bytes: int = DEFAULT_HOLD_BYTES,
                 spill_dir: str | Path | None = None,
                 state_dir: str | Path | None = None) -> None:
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
        self.flowing = False  # the run's stream is open (READY and RUN)
        self.reading = False  # the board is read out (RUN)
        self.credit = 0
        self.counters = ProducerCounters()
        self.keys: ClientKeys | None = None  # CURVE keys for the aggregator, if it has them
        self.tap_messages = int(tap_messages)
        self.backlog = Backlog(hold_bytes, spill_dir, name)
        #: Spill files a dead process of this name left: kept, reported, never replayed
        #: (their frames belong to the dead process's stream, whose earlier frames died).
        self.orphaned_spills = ([] if spill_dir is None else sorted(
            p for p in Path(spill_dir).glob(f"spill-{name}-*.bin")
            if p != self.backlog.spill_path))
        self.counters.spill_files_orphaned = len(self.orphaned_spills)
        # Every frame before it is sent; what a dead predecessor logged is sent again at the
        # next prepare of its run, and its last data message starts a hole in the board's
        # data, told at the first data after begin (see gapmark).
        self.framelog = FrameLog(state_dir, name) if state_dir else None
        self.predecessor = framelog.read_log(state_dir, name) if state_dir else LogFiles()
        streams = earlyread.DeadStreams()
        self.before_death = gapmark.last_mark(
            (f.header.run, f.header.io_group, f.payload)
            for f in streams.watch(self.predecessor.frames()) if f.header.kind == KIND_DATA)
        # Taking over a stream the dead one left unfinished, a board that runs on its own is
        # read from the start, not from the catch-up's begin (see earlyread).
        takeover = streams.unfinished_run()
        self._early = (earlyread.EarlyReader(name, source, earlyread.EarlyHold(
            takeover, self.backlog.memory_bytes), self.counters)
            if takeover is not None and source.runs_on_its_own else None)
        #: Called (from the data thread) with a text and details of frames of a finished run
        #: a dead predecessor logged (kept on disk, not sent).
        self.on_stale: Callable[[str, dict[str, Any]], None] | None = None
        #: Called (from the data thread) with the text and details of a hole in the data.
        self.on_gap: Callable[[str, dict[str, Any]], None] | None = None
        self.unacked: deque[Pending] = deque()
        self.unacked_bytes = 0
        self.acked: dict[int, int] = {}  # epoch -> highest seq storage committed
        self.aggregator_id: int | None = None
        self._welcomed = False
        self._hello_at = 0.0
        self._waiting_since: float | None = None
        self._last_ack = 0.0  # when an ACK last came, or the first unacknowledged frame went
        self._sent_at = 0.0  # when a frame last went
        self._first_sent = -1  # frames at or below this seq of this epoch were sent before
        self._end: tuple[int, int, Future] | None = None  # (epoch, seq, future) of the end
        self._calls = ThreadCalls()
        self._taps: list[DataTap] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> Producer:
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:  # an aggregator with keys admits key holders only
            self.keys.apply(self._sock)
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.connect(self.aggregator)
        self._hello()
        if self._early is not None:
            self._early.start()
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
        self.backlog.close()
        if self.framelog is not None:
            self.framelog.close()  # kept: what is not committed is a successor's to send
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
    def prepare(self, run_number: int, epoch_base: int | None = None) -> None:
        """A new stream for ``run_number``; its epoch inside the block the core admitted this
        source with (``epoch_base``; a random one without run control)."""
        def do() -> None:
            if self.framelog is not None:
                self.framelog.reset()  # what it held is of a run that is over
            self.run_number = run_number
            self.epoch = (random.getrandbits(EPOCH_BITS) if epoch_base is None
                          else admitted.epoch_in_block(epoch_base, random.getrandbits))
            self.seq = 0
            self.offset = 0
            self._first_sent = -1
            self._recover(run_number)
            if self._early is not None and not self._early.prepare(run_number):
                self._early = None
            if self._early is None:
                self.source.prepare()
            self.flowing = True
            self.reading = False
        self.call(do)

    def _recover(self, run_number: int) -> None:
        """What a dead predecessor logged: the frames of ``run_number`` go first (read a
        segment at a time; beyond the hold budget the backlog spills them), its streams get
        their last frame, all of it into this process's log before the predecessor's files
        go; frames of another run are kept on disk (renamed) and told."""
        found, self.predecessor = self.predecessor, LogFiles()
        if not found.paths:
            return
        plan = framelog.RecoveryPlan(run_number)
        resent = packets = 0
        stale = 0
        stale_runs: set[int] = set()
        for f in found.frames():
            h = f.header
            n = _words(f.payload) if h.kind == KIND_DATA else 0
            verdict = plan.take(f, n)
            if verdict == RESEND:
                self._queue(Pending(h.epoch, h.seq, f.header_bytes, f.payload, n))
                resent += 1
                packets += n
            elif verdict == STALE and h.seq > self.acked.get(h.epoch, -1):
                # (those storage has committed, as the aggregator relays at HELLO, need no word)
                stale += 1
                stale_runs.add(h.run)
        for epoch, seq, offset in plan.takeover():
            h = framelog.takeover_header(self.name, self.io_group, run_number, epoch, seq,
                                         offset, time.time())
            self._queue(Pending(epoch, seq, encode_header(h), framelog.TAKEOVER_TEXT, 0))
        self.counters.frames_recovered += resent
        self.counters.packets_recovered += packets
        if self.framelog is not None:
            self.framelog.flush()
        if resent:
            log.warning("%s: sending again %d frames (%d packets) a dead process of this name "
                        "logged in run %d", self.name, resent, packets, run_number)
        if found.torn or found.bad:
            log.warning("%s: the dead process's log had %d record(s) cut short and %d "
                        "unreadable", self.name, found.torn, found.bad)
        if stale:
            self.counters.frames_stale += stale
            kept = []
            for p in found.paths:
                with contextlib.suppress(OSError):
                    p.rename(p.with_suffix(".stale"))
                    kept.append(p.with_suffix(".stale"))
            text = gapmark.stale_text(self.name, stale, sorted(stale_runs), kept)
            log.warning("%s", text)
            if self.on_stale is not None:
                self.on_stale(text, {"files": [str(p) for p in kept],
                                     "runs": sorted(stale_runs)})
            return
        for p in found.paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def _snapshot(self) -> None:
        """A ``configs`` frame with the chips' registers, if the source can say them."""
        take = self.config_rows or self.source.configs
        try:
            rows = take()
        except Exception:
            log.exception("%s: no configuration snapshot", self.name)
            return
        if rows is not None and len(rows):
            self._frame(KIND_CONFIGS, rows.tobytes())

    def send_info(self, text: str) -> bool:
        """An INFO frame into the stream, in order with the data; only while data flows."""
        def do() -> bool:
            if not self.flowing:
                return False
            self._frame(KIND_INFO, str(text).encode())
            return True
        return bool(self.call(do))

    def send_configs(self, rows: np.ndarray) -> bool:
        """A ``configs`` frame (chip registers, e.g. just written) into the stream, in order
        with the data; only while data flows."""
        def do() -> bool:
            if not self.flowing or not len(rows):
                return False
            self._frame(KIND_CONFIGS, rows.tobytes())
            return True
        return bool(self.call(do))

    def send_data(self, messages: list[bytes]) -> bool:
        """PACMAN data messages into the stream (e.g. from a routine); only while data flows."""
        def do() -> bool:
            if not self.flowing:
                return False
            if not self.reading:
                self.counters.messages_before_begin += len(messages)
            for m in messages:
                self._frame(KIND_DATA, bytes(m))
            return True
        return bool(self.call(do))

    def begin(self) -> None:
        def do() -> None:
            self._snapshot()
            self._frame(KIND_INFO, b"Beginning run")
            early, self._early = self._early, None
            held = early.release() if early is not None else None
            if held is None:
                self.source.start()
            self.reading = True
            if held:  # read before this begin, after the dead stream's end: the run's data
                self._forward(held)
        self.call(do)

    def end(self, patience: float = END_PATIENCE) -> dict[str, float]:
        """Send "Ending run" after the data already read, stop reading; wait until it is
        sent (held frames first). The wait gives up after ``patience`` seconds in which
        nothing was sent or acknowledged (the path is down for good). It does not wait for
        storage's acknowledgement: a storage that refuses a failed run's frames lets them go
        only when its own end comes; until then they stay held here, and go again to an
        aggregator that restarts."""
        done: Future = Future()

        def do() -> None:
            if not self.flowing and self.run_number < 0:
                done.set_result(None)
                return
            if self._early is not None:  # prepared, not begun: what was read early is no run's
                self._early.discard()
                self._early = None
            if self.reading:
                # What the board has already delivered (a PACMAN client's queue) belongs to
                # this run: taken now, before the marker, never left for the next run.
                self._forward(self.source.read(0.0))
            else:  # ended from READY: what the board sent meanwhile, kept as before begin
                early = self.source.pending()
                self.counters.messages_before_begin += len(early)
                self._forward(early)
            self.reading = False
            self._snapshot()
            self.flowing = False
            last = self._frame(KIND_INFO, b"Ending run", last=True)
            self._end = (last.epoch, last.seq, done)
            self._check_end()
        self.call(do)
        progress = -1
        deadline = time.monotonic() + patience
        while not done.done():
            now = (self.counters.frames_sent, self.counters.frames_acked)
            if now != progress:
                progress, deadline = now, time.monotonic() + patience
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: the end of run {self.run_number} was not sent: "
                    f"nothing was sent or acknowledged for {patience:g} s with "
                    f"{len(self.backlog)} frames waiting and {len(self.unacked)} sent and not "
                    "acknowledged (is the aggregator or storage down?)")
            with contextlib.suppress(TimeoutError):
                done.result(0.2)
        self.call(self._stop_source)
        return self.snapshot()

    def _stop_source(self) -> None:
        self.source.stop()
        if self._recorder is not None:
            self._recorder.close()
            self._recorder = None

    def snapshot(self) -> dict[str, float]:
        """Counters, where the stream is, what is held, and the source's own counts."""
        b = self.backlog
        return {**self.counters.as_dict(), "seq": self.seq, "run_number": self.run_number,
                "frames_held": len(b) + len(self.unacked),
                "bytes_held_in_memory": b.mem_bytes + self.unacked_bytes,
                "max_bytes_held": b.max_bytes_held, "frames_spilled": b.frames_spilled,
                "bytes_spilled": b.bytes_spilled, "frames_replayed": b.frames_replayed,
                "spill_errors": b.spill_errors,
                "frames_not_logged": self.framelog.frames_not_logged if self.framelog else 0,
                **self.source.counters()}

    # -- the data thread ---------------------------------------------------------------------
    def _frame(self, kind: str, payload: bytes, last: bool = False) -> Pending:
        """Give ``payload`` the stream's next seq and queue it behind everything else."""
        words = _words(payload) if kind == KIND_DATA else 0
        h = FrameHeader(self.name, self.epoch, self.seq, self.io_group, self.run_number,
                        time.time(), kind, self.offset, last)
        item = Pending(self.epoch, self.seq, encode_header(h), payload, words)
        self._queue(item)
        self.seq += 1
        self.offset += words
        if kind == KIND_INFO:
            self.counters.info_frames += 1
        return item

    def _queue(self, item: Pending) -> None:
        """Log a frame, then queue it behind every other (it is sent after a flush)."""
        if self.framelog is not None:
            self.framelog.append(item.epoch, item.seq, item.header, item.payload)
        self.backlog.push(item)

    def _hello(self) -> None:
        """HELLO, then send nothing until the WELCOME: frames of ours that a restarted
        aggregator receives after our HELLO must start where it should (see :meth:`_welcome`)."""
        self._sock.send_multipart(ProducerHello(self.name, self.io_group).parts())
        self.counters.hellos += 1
        self.credit = 0  # the aggregator starts our account afresh
        self._welcomed = False
        self._hello_at = time.monotonic()

    def _welcome(self, msg: Welcome) -> None:
        self._welcomed = True
        if msg.aggregator != self.aggregator_id:
            if self.aggregator_id is not None:
                self.counters.aggregator_changes += 1
            self.aggregator_id = msg.aggregator
            if self.unacked:
                # What the old aggregator had may be gone with it: all again, in order.
                log.warning("%s: a new aggregator; sending %d unacknowledged frames again",
                            self.name, len(self.unacked))
                self.counters.frames_resent += len(self.unacked)
                self.backlog.push_front(list(self.unacked))
                self.unacked.clear()
                self.unacked_bytes = 0

    def _ack(self, msg: Ack) -> None:
        self._last_ack = time.monotonic()
        for source, epoch, seq in msg.streams:
            if source == self.name and seq > self.acked.get(epoch, -1):
                self.acked[epoch] = seq
        u = self.unacked
        while u and u[0].seq <= self.acked.get(u[0].epoch, -1):
            item = u.popleft()
            self.unacked_bytes -= len(item.payload)
            self.counters.frames_acked += 1
        if self.framelog is not None:
            if not self.flowing and not u and not len(self.backlog):
                self.framelog.reset()  # the stream is complete and committed
            else:
                self.framelog.trim(self.acked)
        self._check_end()

    def _check_end(self, sent: Pending | None = None) -> None:
        """Resolve the end's wait once its marker is sent (or acknowledged)."""
        if self._end is None:
            return
        epoch, seq, fut = self._end
        done = self.acked.get(epoch, -1) >= seq
        if sent is not None and sent.epoch == epoch and sent.seq >= seq:
            done = True
        if done:
            self._end = None
            fut.set_result(None)

    def _receive(self, timeout_ms: int) -> None:
        while self._sock.poll(timeout_ms):
            timeout_ms = 0
            try:
                msg = parse_aggregator_message(self._sock.recv_multipart())
            except ProtocolError as exc:
                self.counters.bad_messages += 1
                log.warning("%s: ignored a message from the aggregator: %s", self.name, exc)
                continue
            if isinstance(msg, Credit):
                self.credit += msg.nbytes
            elif isinstance(msg, Ack):
                self._ack(msg)
            else:
                self._welcome(msg)

    def _keep_in_touch(self) -> None:
        """HELLO again when unanswered or when credit stays away with frames waiting."""
        now = time.monotonic()
        waiting = self.credit <= 0 and len(self.backlog) > 0
        if waiting and self._waiting_since is None:
            self._waiting_since = now
            self.counters.credit_waits += 1
        elif not waiting and self._waiting_since is not None:
            self.counters.seconds_waiting_credit += now - self._waiting_since
            self._waiting_since = None
        if now - self._hello_at < HELLO_INTERVAL:
            return
        silent = bool(self.unacked) and now - self._last_ack >= ACK_SILENCE
        idle = (not self.unacked and not len(self.backlog)
                and now - self._sent_at >= HELLO_INTERVAL)
        if not self._welcomed or silent or idle or (
                waiting and now - self._waiting_since >= HELLO_INTERVAL):
            self._hello()

    def _send_backlog(self) -> None:
        c = self.counters
        if self.framelog is not None:
            self.framelog.flush()  # nothing leaves before it would outlive this process
        while self._welcomed and self.credit > 0:
            item = self.backlog.peek()
            if item is None:
                return
            self.backlog.pop()
            if item.seq <= self.acked.get(item.epoch, -1):
                c.frames_not_resent += 1  # storage has it (its ACK came meanwhile)
                continue
            self._sock.send_multipart([FRAME, item.header, item.payload], copy=False)
            self._sent_at = time.monotonic()
            if not self.unacked:
                self._last_ack = time.monotonic()  # the silence counts from here
            self.unacked.append(item)
            if self._end is not None:
                self._check_end(item)
            size = len(item.payload)
            self.unacked_bytes += size
            self.credit -= size
            if item.epoch != self.epoch or item.seq <= self._first_sent:
                continue  # sent again (a new aggregator): counted in frames_resent
            self._first_sent = item.seq
            c.frames_sent += 1
            c.bytes_sent += size
            c.packets_sent += item.words

    def _record(self, msgs: list[bytes]) -> None:
        if self.record_path is None:
            return
        if self._recorder is None:
            from larpixdaq.formats.rawfile import RawWriter

            path = free_name(Path(str(self.record_path).replace("{run}",
                                                                str(self.run_number))))
            self._recorder = RawWriter(path, swmr=False)
        self._recorder.append(msgs, self.io_group)
        self._recorder.flush()

    def _read_board(self) -> None:
        idle = self.credit <= 0 or not self._welcomed or not len(self.backlog)
        self._forward(self.source.read(0.02 if idle else 0.0))

    def _tell_gap(self, msgs: list[bytes]) -> None:
        """The first data after a restart in the run a dead predecessor was in: the hole
        goes into the stream (INFO, before this data) and to run control (an incident)."""
        before, self.before_death = self.before_death, None
        if before is None or before.run != self.run_number:
            return
        after_time, _ = gapmark.message_marks(msgs[0])
        after_sync = gapmark.first_sync(msgs)
        self.counters.data_gaps += 1
        self._frame(KIND_INFO, gapmark.gap_info(before, after_time, after_sync).encode())
        text = gapmark.gap_text(self.name, before, after_time, after_sync)
        log.warning("%s", text)
        if self.on_gap is not None:
            self.on_gap(text, {"io_group": self.io_group, "run_number": self.run_number,
                               "from_unix": before.msg_time, "to_unix": after_time,
                               "from_sync": before.sync_time, "to_sync": after_sync})

    def _forward(self, msgs: list[bytes]) -> None:
        """The board's messages into the stream (and to the recorder and routine taps)."""
        if not msgs:
            return
        if self.before_death is not None and self.reading:
            self._tell_gap(msgs)
        for msg in msgs:
            self._frame(KIND_DATA, msg)
        if self.framelog is not None:
            self.framelog.flush()
        # Recorded once logged: what a recording names, a successor can send again.
        self._record(msgs)
        for tap in tuple(self._taps):
            self.counters.tap_messages_dropped += tap.offer(msgs)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._calls.run_pending()
            self._receive(0)
            self._keep_in_touch()
            self._send_backlog()
            if self._stop.is_set():
                break  # never read from the board what can no longer be sent
            if self.reading and (self.source.runs_on_its_own
                                 or not len(self.backlog)):
                self._read_board()
            elif self._early is not None and self._early.reading:
                self._early.read(self.backlog.mem_bytes + self.unacked_bytes)
            elif self.flowing:  # READY: no readout; what the board sent anyway is kept
                early = self.source.pending()
                self.counters.messages_before_begin += len(early)
                self._forward(early)
                self._receive(20)
            else:
                self._receive(20)
        if self._early is not None:
            self._early.discard()
        # Read from the board or framed, and not sent when it stopped.
        self.counters.messages_unsent += sum(1 for p in self.backlog.drain() if p.words)


def free_name(path: Path) -> Path:
    """``path``, or if it exists the first of ``stem-2``, ``stem-3``, ... that does not: a
    recording (a dead predecessor's, an earlier run's) is never replaced."""
    n = 2
    free = path
    while free.exists():
        free = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return free


def _words(payload: bytes) -> int:
    """The PACMAN words of a data message."""
    return max((len(payload) - HEADER_BYTES) // WORD_BYTES, 0)
