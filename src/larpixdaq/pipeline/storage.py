"""Storage: receives the aggregator's frames and writes one LArPix+HDF5 file (set) per run.

The data thread owns the socket and the :class:`~larpixdaq.pipeline.runfile.RunWriter`;
run-control hooks hand it work through a queue and wait for the answer, so HDF5 is only
ever touched by one thread. The thread:

* says ``HELLO`` to the aggregator with what is already on disk (after a restart, from the
  run's journal) and the credit it grants (``window`` bytes);
* takes frames in batches, writes them (one decode call per batch), gives the credit back;
* commits every ``commit_interval`` seconds (or ``commit_bytes`` of frames): flush, the
  part synced to the disk (on a thread that only calls ``fsync``, while the next frames are
  decoded), journal line (synced), then ``ACK`` with the highest committed seq per stream,
  so the aggregator can let go (``--no-sync``: no waiting for the disk, see ``RunWriter``).

At the end of a run it waits (up to ``end_timeout``) until every stream it has seen has
delivered its final frame (the "Ending run" marker), then closes the file. If it was killed
during a run, the next start finds the run's open journal in the data directory and resumes
that run at once (:mod:`.runfile`), before run control even knows it is back.

A write error (a full disk) never turns into acknowledged data: the part is cut back to
its last commit and left readable, an alarm goes to the core at once (which fails the run
with the cause), and every later frame of the run is refused (counted, not acknowledged),
so the aggregator keeps holding them and its window stops the producers. Only when run
control has given up on the run (ERROR, end or reset) are the refused frames let go. The
next run needs no restart, only room on the disk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import zmq

from larpixdaq.pipeline.protocol import (
    Ack,
    Credit,
    FrameError,
    ProtocolError,
    StorageHello,
    parse_frame,
    stream_seqs,
)
from larpixdaq.pipeline.runfile import (
    DEFAULT_PART_BYTES,
    DEFAULT_RESERVE_BYTES,
    RunFileExists,
    RunWriter,
    StorageError,
)
from larpixdaq.pipeline.runjournal import Stream, journal_path, read_journal, unfinished_runs
from larpixdaq.pipeline.threadcalls import ThreadCalls
from larpixdaq.runcontrol.admitted import AdmittedStreams
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.messages import RunInfo
from larpixdaq.runcontrol.security import ClientKeys
from larpixdaq.runcontrol.statemachine import State

log = logging.getLogger("larpixdaq.storage")

DEFAULT_WINDOW = 32 << 20
KEEPALIVE = 0.5
"""Seconds between signs of life to the aggregator when there is nothing else to say: it
gives a storage's place to another only after ``aggregator.STORAGE_TIMEOUT`` of silence."""
HELLO_AFTER = 1.0
"""Seconds without a frame after which storage says HELLO again."""


class StorageLink:
    """Storage's socket to the aggregator, its data thread and the run being written."""

    def __init__(
        self,
        aggregator: str,
        data_dir: str | Path,
        *,
        window: int = DEFAULT_WINDOW,
        part_bytes: int = DEFAULT_PART_BYTES,
        commit_interval: float = 0.2,
        commit_bytes: int = 16 << 20,
        compression: str | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        durable: bool = True,
        context: zmq.Context | None = None,
    ) -> None:
        self.aggregator = aggregator
        self.durable = durable
        self.reserve_bytes = int(reserve_bytes)
        self.data_dir = Path(data_dir)
        self.window = int(window)
        self.part_bytes = int(part_bytes)
        self.commit_interval = commit_interval
        self.commit_bytes = commit_bytes
        self.compression = compression
        self._ctx = context or zmq.Context.instance()
        self.writer: RunWriter | None = None
        self.error: str | None = None
        self.counters: dict[str, int] = dict.fromkeys(
            ["bad_frames", "frames_outside_run", "frames_late", "write_errors",
             "frames_refused", "frames_not_admitted", "files_refused", "hellos"], 0)
        self.admitted: AdmittedStreams | None = None  # the run's streams (None: any)
        #: Called (from the data thread) with the reason when the run cannot be written.
        self.on_alarm: Callable[[str], None] | None = None
        self._extra_acks: dict[Stream, int] = {}
        self._run: int | None = None  # the run storage is in (its writer may have failed)
        self._last_run = -1  # the highest run number storage has been in
        self._refused: dict[Stream, int] = {}  # highest seq refused, not acknowledged
        self._let_go = False  # run control gave up on the failed run: refused may go
        self._uncommitted_frames = 0  # added to the writer since the last commit began
        self._frames_in_commit = 0  # in the commit under way (flushed, not yet journaled)
        self._failed: list[tuple[RunWriter, str]] = []  # parts/journals still to finish
        self._next_retry = 0.0
        self._calls = ThreadCalls()
        self._last_sent = 0.0
        self.keys: ClientKeys | None = None  # CURVE keys for the aggregator, if it has them
        self._ending: tuple[Future, float] | None = None
        self._end_patience = 3.0
        self._stop = threading.Event()
        self._leaving = threading.Event()  # stopping: an end waits for no stream any more
        self._thread: threading.Thread | None = None
        self._last_summary: dict[str, Any] | None = None

    # -- life cycle ------------------------------------------------------------------------
    def resume_unfinished(self) -> int | None:
        """Reopen the newest run this directory left open (storage died in it)."""
        runs = unfinished_runs(self.data_dir)
        if not runs:
            return None
        run = runs[-1]
        self.writer = self._new_writer(run, {})
        self._enter(run)
        log.warning("storage: resumed run %d from its journal (restart %d)", run,
                    self.writer.counters.restarts)
        return run

    def start(self) -> StorageLink:
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self.keys is not None:  # an aggregator with keys admits key holders only
            self.keys.apply(self._sock)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.connect(self.aggregator)
        self._thread = threading.Thread(target=self._loop, name="storage-data", daemon=True)
        self._thread.start()
        return self

    def leave(self) -> None:
        """The process is stopping (SIGTERM): a run's end under way, or asked for from now
        on, closes the file with what has arrived instead of waiting for streams whose
        producers are gone (``up`` stops them first), so storage leaves within its grace."""
        self._leaving.set()

    def stop(self) -> None:
        self._leaving.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.writer is not None and not self.writer.closed:
            # Leaving mid-run on purpose (SIGTERM): commit what we have, keep the journal open
            # so a restart resumes the run.
            try:
                self.writer.commit()
                self.writer.abort()
            except Exception:
                log.exception("storage: could not commit on the way out")
        self._sock.close(0)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run ``fn`` in the data thread and return its result (or raise its exception)."""
        return self._calls.call(fn, timeout)

    # -- run control entry points (called from other threads) ------------------------------
    def prepare(self, run_number: int, metadata: dict[str, Any],
                admitted: AdmittedStreams | None = None) -> dict[str, Any]:
        """Open run ``run_number``'s file; only frames of the ``admitted`` streams go in
        (None: any, as without run control or in a run resumed from its journal)."""
        def do() -> dict[str, Any]:
            self.admitted = admitted
            if self.writer is not None and not self.writer.closed:
                if self.writer.run_number == run_number:
                    return {"files": [str(p) for p in self.writer.files], "resumed": True}
                self.writer.close(clean=False)
            self.let_go()  # a failed run nobody ended: its refused frames go now
            self._retry_failed()
            held = [w.path for w, _ in self._failed if w.held]
            if held:
                raise StorageError(
                    f"no new run: the HDF5 library still holds {held[0]} since the disk "
                    "filled in the middle of a write, and cannot be trusted in this process; "
                    "restart storage (it repairs the part from its journal)")
            self.error = None
            self.writer = None
            try:
                self.writer = self._new_writer(run_number, metadata)
            except RunFileExists:
                self.counters["files_refused"] += 1
                raise
            self._enter(run_number)
            return {"files": [str(p) for p in self.writer.files]}
        return self.call(do)

    def _enter(self, run_number: int) -> None:
        self._run = run_number
        self._last_run = max(self._last_run, run_number)
        self._refused = {}
        self._let_go = False
        self._uncommitted_frames = self._frames_in_commit = 0

    def let_go(self) -> None:
        """Run control gave up on the failed run: acknowledge its refused frames so the
        aggregator frees them (they stay counted as ``frames_refused``, never as written)."""
        def do() -> None:
            self._let_go = True
            if self._refused:
                self._extra_acks.update({s: max(q, self._extra_acks.get(s, -1))
                                         for s, q in self._refused.items()})
                self._refused = {}
                self._send_ack({})
        if threading.current_thread() is self._thread or self._thread is None:
            do()
        else:
            self.call(do)

    def end(self, timeout: float = 3.0) -> dict[str, Any]:
        """Wait for every stream's last frame, close, return the summary.

        The wait gives up after ``timeout`` seconds in which no frame arrived (a producer
        that died never sends its marker); while frames keep coming it goes on.
        """
        fut: Future = Future()

        def do() -> None:
            self._ending = (fut, time.monotonic() + timeout)
            self._end_patience = timeout
            self._check_end()
        self.call(do)
        return fut.result()

    def _new_writer(self, run_number: int, metadata: dict[str, Any]) -> RunWriter:
        return RunWriter(self.data_dir, run_number, metadata, part_bytes=self.part_bytes,
                         compression=self.compression, reserve_bytes=self.reserve_bytes,
                         durable=self.durable)

    # -- the data thread -------------------------------------------------------------------
    def _hello(self) -> None:
        committed: dict[Stream, int] = dict(self._extra_acks)
        if self.writer is not None and not self.error:
            # (after a write error the writer's trackers include rows that were cut: what
            # was committed before it has been acknowledged already)
            committed.update(self.writer.committed())
        self._send(StorageHello(stream_seqs(committed), self.window).parts())
        self.counters["hellos"] += 1

    def _loop(self) -> None:
        self._hello()
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        last_commit = time.monotonic()
        last_heard = time.monotonic()
        pending_bytes = 0
        while not self._stop.is_set():
            self._calls.run_pending()
            batch = []
            size = 0
            if poller.poll(20):
                while len(batch) < 512 and size < (8 << 20):
                    try:
                        parts = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    batch.append(parts)
                    size += len(parts[-1])
            now = time.monotonic()
            if batch:
                last_heard = now
                if self._ending is not None:
                    self._ending = (self._ending[0], now + self._end_patience)
                self._write_batch(batch)
                self._send(Credit(size).parts())
                pending_bytes += size
            elif now - last_heard > HELLO_AFTER:
                # Nothing for a while: the aggregator may have restarted and not know us (or
                # refused our HELLO while the storage before us was still heard from).
                self._hello()
                last_heard = now
            if now - self._last_sent > KEEPALIVE:
                # A sign of life, so the aggregator keeps sending to us and to nobody else.
                self._send(Credit(0).parts())
            if self._failed and now >= self._next_retry:
                self._next_retry = now + 1.0
                self._retry_failed()
            self._ack_ended_commit()
            if pending_bytes and (now - last_commit >= self.commit_interval
                                  or pending_bytes >= self.commit_bytes):
                self._commit()
                pending_bytes = 0
                last_commit = now
            if self._ending is not None:
                if pending_bytes:
                    self._commit()
                    pending_bytes = 0
                self._check_end()
        self._calls.run_pending()

    def _write_batch(self, batch: list[list[zmq.Frame]]) -> None:
        frames = []
        for parts in batch:
            try:
                frame = parse_frame(parts)
            except ProtocolError as exc:
                self.counters["bad_frames"] += 1
                if isinstance(exc, FrameError):
                    log.warning("storage: rejected a frame: %s", exc)
                continue
            frames.append((frame.header, frame.payload.buffer))
        run = self._run
        mine = [f for f in frames if f[0].run == run] if run is not None else []
        if len(mine) != len(frames):
            self._ack_unwritten([f for f in frames if f[0].run != run])
        if not mine:
            return
        w = self.writer
        if self.error or w is None or w.closed:
            self._refuse(mine)
            return
        if self.admitted is not None and self.admitted.run_number == w.run_number:
            mine = self._admitted_only(mine)
        try:
            w.add(mine)
        except (StorageError, OSError, RuntimeError) as exc:
            self._fail(exc)
            self._refuse(mine)
            return
        self._uncommitted_frames += len(mine)

    def _ack_unwritten(self, frames: list) -> None:
        """Frames of no open run: counted, and acknowledged so the aggregator lets go.

        Frames of a run storage has already left are ``frames_late`` (that run was closed
        without them: it counted them as missing or unfinished, or failed); any other run
        is ``frames_outside_run``."""
        late = sum(1 for h, _ in frames if 0 <= h.run <= self._last_run)
        self.counters["frames_late"] += late
        self.counters["frames_outside_run"] += len(frames) - late
        self._remember_acks(frames)
        if frames:
            self._send_ack({})

    def _admitted_only(self, frames: list) -> list:
        """The frames of admitted streams; the others are counted, acknowledged (so the
        aggregator lets go) and never written."""
        admitted = self.admitted
        ok, refused = [], []
        for f in frames:
            h = f[0]
            why = admitted.refusal(h.source, h.epoch, h.io_group, h.run)
            (ok if why is None else refused).append(f)
            if why is not None and len(refused) == 1:
                log.warning("storage: refused a frame: %s", why)
        if refused:
            self.counters["frames_not_admitted"] += len(refused)
            self._remember_acks(refused)
            self._send_ack({})
        return ok

    def _remember_acks(self, frames: list) -> None:
        for h, _ in frames:
            if h.seq > self._extra_acks.get(h.stream, -1):
                self._extra_acks[h.stream] = h.seq

    def _refuse(self, frames: list) -> None:
        """Frames of the run that storage cannot write: counted, never acknowledged while
        the run is open (the aggregator holds them: back-pressure up to the producers)."""
        self.counters["frames_refused"] += len(frames)
        for h, _ in frames:
            if h.seq > self._refused.get(h.stream, -1):
                self._refused[h.stream] = h.seq
        if self._let_go:
            self.let_go()

    def _fail(self, exc: BaseException) -> None:
        self.counters["write_errors"] += 1
        self.error = str(exc)
        log.error("storage: %s", exc)
        w = self.writer
        if w is not None:
            # What was added since the last commit is cut from the file: refused as well.
            self.counters["frames_refused"] += self._uncommitted_frames + self._frames_in_commit
            self._uncommitted_frames = self._frames_in_commit = 0
            for stream, tracker in w.trackers.items():
                if tracker.last_seq > self._refused.get(stream, -1):
                    self._refused[stream] = tracker.last_seq
            w.abort()
            self._failed.append((w, self.error))
        if self.on_alarm is not None:
            self.on_alarm(f"{self.error}; storage refuses run {self._run}'s frames from now "
                          "on (held upstream); the run cannot be completed")

    def _retry_failed(self) -> None:
        """Finish failed runs' files once the disk has room: the part repaired (if that
        was not possible at once) and the journal saying closed."""
        for item in list(self._failed):
            writer, reason = item
            if writer.finish_failed(reason):
                self._failed.remove(item)
                log.info("storage: run %d's files are finished after its write error",
                         writer.run_number)

    def _commit(self) -> None:
        """Start a commit (the disk writes while the next frames are decoded); what a
        commit that ended covers is acknowledged."""
        self._commit_step(start=True)

    def _ack_ended_commit(self) -> None:
        """Acknowledge a commit as soon as its rows are on the disk and its journal line
        is written, not only at the next commit."""
        w = self.writer
        if w is not None and not w.closed and w.commit_under_way:
            self._commit_step(start=False)

    def _commit_step(self, start: bool) -> None:
        w = self.writer
        if w is None or w.closed:
            return
        try:
            ended = w.start_commit() if start else w.end_commit()
        except (StorageError, OSError, RuntimeError) as exc:
            self._fail(exc)
            return
        if start:
            self._frames_in_commit = self._uncommitted_frames if w.commit_under_way else 0
            self._uncommitted_frames = 0
        elif ended is not None:
            self._frames_in_commit = 0
        if ended is not None:
            self._send_ack(ended)

    def _send_ack(self, committed: dict[Stream, int]) -> None:
        merged = {**self._extra_acks, **committed}
        self._send(Ack(stream_seqs(merged)).parts())

    def _send(self, parts: list[bytes]) -> None:
        self._sock.send_multipart(parts)
        self._last_sent = time.monotonic()

    def _check_end(self) -> None:
        assert self._ending is not None
        fut, deadline = self._ending
        w = self.writer
        if w is None or w.closed:
            self._ending = None
            self._run = None
            if self.error and w is not None:
                # Run control ends the failed run (it knows why from the alarm): say what
                # is on disk and what was refused; the frames held upstream may go now.
                self.let_go()
                self._retry_failed()
                summary = w.summary()
                summary["error"] = self.error
                fut.set_result(summary)
            elif self.error:
                fut.set_exception(StorageError(self.error))
            else:
                fut.set_result(self._last_summary or {"files": [], "counters": {}})
            return
        unfinished = [s for s in w.trackers if s not in w.finished]
        if unfinished and time.monotonic() < deadline and not self._leaving.is_set():
            return
        self._ending = None
        self._run = None
        try:
            summary = w.close(clean=not self.error, extra={"end_time": time.time()})
            self._send_ack(w.committed())
        except (StorageError, OSError, RuntimeError) as exc:
            self._fail(exc)
            fut.set_exception(StorageError(str(exc)))
            return
        summary["counters"]["streams_unfinished"] = len(unfinished)
        self._last_summary = summary
        if self.error:
            fut.set_exception(StorageError(self.error))
        else:
            fut.set_result(summary)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counters)
        w = self.writer
        if w is not None:
            out.update(w.counters.as_dict())
            out["run_number"] = w.run_number
        return out


def journal_is_open(data_dir: str | Path, run_number: int) -> bool:
    path = journal_path(Path(data_dir), run_number)
    return path.exists() and not any(r.get("closed") for r in read_journal(path))


class StorageComponent(Component):
    """Storage under run control. Reports ``packets_written``/``packets_lost`` and its files
    at the end of each run; resumes a run it died in as soon as it starts again."""

    role = "storage"

    def __init__(self, name: str, core: str, link: StorageLink, **kw: Any) -> None:
        super().__init__(name, core, **kw)
        self.link = link
        if link.keys is None:  # the data path with the component's keys
            link.keys = self._keys
        link.on_alarm = self.alarm
        self._base: dict[str, int] = {}  # the link's counters when this run was prepared
        run = link.resume_unfinished()
        if run is not None:
            # Carry on with the run: run control finds us in it, and its end (or reset after
            # the loss it noticed) closes the file.
            with self._state_lock:
                self.state, self.run = State.RUN, RunInfo(run_number=run)

    def counters(self) -> dict[str, Any]:
        return self.link.snapshot()

    def on_prepare(self, run: RunInfo) -> dict | None:
        meta = {"run_type": run.run_type, "comment": run.comment,
                "start_time": run.start_time or time.time(),
                "config_hash": run.config_hash or ""}
        self._base = dict(self.link.counters)
        return self.link.prepare(run.run_number, meta,
                                 AdmittedStreams.from_run(run.run_number, run.admitted))

    def on_error(self, reason: str) -> None:
        # The core put the run in ERROR: what storage refused will never be written to it.
        if self.link.error:
            self.link.let_go()

    def on_end(self, run: RunInfo | None) -> dict | None:
        summary = self.link.end()
        # The link's own counts (frames rejected, refused or outside the run) belong in the
        # record too: as they stand and, as run_*, what this run added.
        return {"files": summary["files"],
                "counters": {**self._run_link_counters(), **summary["counters"]}}

    def _run_link_counters(self) -> dict[str, int]:
        now = dict(self.link.counters)
        return {**now, **{f"run_{k}": v - self._base.get(k, 0) for k, v in now.items()}}

    def start(self) -> StorageComponent:
        self.link.start()
        super().start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        # Before the base waits for a transition under way: an end waiting for streams
        # that will never finish must finish now, or the process outlives its grace.
        self.link.leave()
        super().stop(timeout)
        self.link.stop()
