"""Storage: receives the aggregator's frames and writes one LArPix+HDF5 file (set) per run.

The data thread owns the socket and the :class:`~larpixdaq.pipeline.runfile.RunWriter`;
run-control hooks hand it work through a queue and wait for the answer, so HDF5 is only
ever touched by one thread. The thread:

* says ``HELLO`` to the aggregator with what is already on disk (after a restart, from the
  run's journal) and the credit it grants (``window`` bytes);
* takes frames in batches, writes them (one decode call per batch), gives the credit back;
* commits every ``commit_interval`` seconds (or ``commit_bytes`` of frames): flush, journal
  line, then ``ACK`` with the highest committed seq per stream, so the aggregator can let go.

At the end of a run it waits (up to ``end_timeout``) until every stream it has seen has
delivered its final frame (the "Ending run" marker), then closes the file. If it was killed
during a run, the next start finds the run's open journal in the data directory and resumes
that run at once (:mod:`.runfile`), before run control even knows it is back.
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
    RunFileExists,
    RunWriter,
    StorageError,
    Stream,
    journal_path,
    read_journal,
    unfinished_runs,
)
from larpixdaq.pipeline.threadcalls import ThreadCalls
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.messages import RunInfo
from larpixdaq.runcontrol.statemachine import State

log = logging.getLogger("larpixdaq.storage")

DEFAULT_WINDOW = 32 << 20


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
        context: zmq.Context | None = None,
    ) -> None:
        self.aggregator = aggregator
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
            ["bad_frames", "frames_outside_run", "write_errors", "files_refused", "hellos"], 0)
        self._extra_acks: dict[Stream, int] = {}
        self._calls = ThreadCalls()
        self._ending: tuple[Future, float] | None = None
        self._end_patience = 3.0
        self._stop = threading.Event()
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
        log.warning("storage: resumed run %d from its journal (restart %d)", run,
                    self.writer.counters.restarts)
        return run

    def start(self) -> StorageLink:
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.connect(self.aggregator)
        self._thread = threading.Thread(target=self._loop, name="storage-data", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
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
    def prepare(self, run_number: int, metadata: dict[str, Any]) -> dict[str, Any]:
        def do() -> dict[str, Any]:
            if self.writer is not None and not self.writer.closed:
                if self.writer.run_number == run_number:
                    return {"files": [str(p) for p in self.writer.files], "resumed": True}
                self.writer.close(clean=False)
            self.error = None
            try:
                self.writer = self._new_writer(run_number, metadata)
            except RunFileExists:
                self.counters["files_refused"] += 1
                raise
            return {"files": [str(p) for p in self.writer.files]}
        return self.call(do)

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
                         compression=self.compression)

    # -- the data thread -------------------------------------------------------------------
    def _hello(self) -> None:
        committed: dict[Stream, int] = dict(self._extra_acks)
        if self.writer is not None:
            committed.update(self.writer.committed())
        self._sock.send_multipart(StorageHello(stream_seqs(committed), self.window).parts())
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
                self._sock.send_multipart(Credit(size).parts())
                pending_bytes += size
            elif now - last_heard > 2.0:
                # Nothing for a while: the aggregator may have restarted and not know us.
                self._hello()
                last_heard = now
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
        w = self.writer
        if w is None or w.closed or self.error:
            self._ack_unwritten(frames)
            return
        mine = [f for f in frames if f[0].run == w.run_number]
        if len(mine) != len(frames):
            self._ack_unwritten([f for f in frames if f[0].run != w.run_number])
        try:
            w.add(mine)
        except (StorageError, OSError, RuntimeError) as exc:
            self._fail(exc)

    def _ack_unwritten(self, frames: list) -> None:
        """Frames of no open run: counted, and acknowledged so the aggregator lets go."""
        self.counters["frames_outside_run"] += len(frames)
        for h, _ in frames:
            if h.seq > self._extra_acks.get(h.stream, -1):
                self._extra_acks[h.stream] = h.seq
        if frames:
            self._send_ack({})

    def _fail(self, exc: BaseException) -> None:
        self.counters["write_errors"] += 1
        self.error = str(exc)
        log.error("storage: %s", exc)
        if self.writer is not None:
            self.writer.abort()

    def _commit(self) -> None:
        w = self.writer
        if w is None or w.closed:
            return
        try:
            committed = w.commit()
        except (StorageError, OSError, RuntimeError) as exc:
            self._fail(exc)
            return
        self._send_ack(committed)

    def _send_ack(self, committed: dict[Stream, int]) -> None:
        merged = {**self._extra_acks, **committed}
        self._sock.send_multipart(Ack(stream_seqs(merged)).parts())

    def _check_end(self) -> None:
        assert self._ending is not None
        fut, deadline = self._ending
        w = self.writer
        if w is None or w.closed:
            self._ending = None
            if self.error:
                fut.set_exception(StorageError(self.error))
            else:
                fut.set_result(self._last_summary or {"files": [], "counters": {}})
            return
        unfinished = [s for s in w.trackers if s not in w.finished]
        if unfinished and time.monotonic() < deadline:
            return
        self._ending = None
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
        return self.link.prepare(run.run_number, meta)

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
        super().stop(timeout)
        self.link.stop()
