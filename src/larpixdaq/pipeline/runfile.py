"""The files of one run: LArPix+HDF5 v2.4 parts, a commit journal, and resuming after a crash.

Storage hands a :class:`RunWriter` batches of received frames; the writer drops duplicates,
counts holes, decodes every data frame of a batch in one call, appends the rows, and on
:meth:`RunWriter.commit` flushes the part to disk and appends one line to the run's journal.
Only what a journal line covers is acknowledged upstream, so after a crash the journal says
exactly which frames are on disk. With ``durable`` (the default) a commit waits until the
disk itself holds the part's rows and the journal line (``fsync``), and a new file's name is
synced into its directory: what was acknowledged then survives a power cut or a kernel crash
too, not only the death of the process.

* ``run-000042.h5``, ``run-000042-p001.h5``, ... are the parts (a new part when the current
  one reaches ``part_bytes`` of rows, and after every restart);
* ``run-000042.journal`` holds JSON lines: one ``open`` line with the run metadata, one line
  per commit (part, row counts, per-stream last seq and next word offset, counters) and a
  ``closed`` line at the end; an ``opened_part`` line names each part as it is created. A
  torn line (a crash or a full disk while writing it) is skipped.

Resuming (a ``RunWriter`` opened on a run whose journal is not closed): the last committed
part gets its write flags cleared, is cut back to the committed row counts and gets its
clean-close mark and checksum; parts the journal says this run opened after the last commit
are removed (nothing in them was acknowledged), and writing continues in a new part. Frames
the aggregator sends again are then either already committed (dropped as duplicates) or new.

Files are never taken from anyone: every part is created exclusively (``O_EXCL``), a file
the journal does not name as this run's own is never opened for writing, cut or removed (a
new run whose first part name is taken is refused, :class:`RunFileExists`; a later part
takes the next free name), and a part that is finished (closed clean, or repaired) is made
read-only.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from larpixdaq.formats.hdf5file import Hdf5File, Hdf5Writer
from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES, decode_data_messages
from larpixdaq.formats.rows import CONFIGS_DTYPE, PACKETS_DTYPE, configs_hash, message_text
from larpixdaq.pipeline.durable import sync_dir, sync_fd, sync_file
from larpixdaq.pipeline.h5recover import clear_write_flags, repair_part
from larpixdaq.pipeline.protocol import KIND_CONFIGS, KIND_DATA, KIND_INFO, FrameHeader
from larpixdaq.pipeline.runjournal import (
    JournalRefused,
    JournalWriter,
    Stream,
    is_sealed,
    journal_path,
    part_path,
    plan_resume,
    read_journal,
    run_stem,
    seal,
    stream_key,
)
from larpixdaq.pipeline.sequence import SeenFrames, SeqTracker, frame_digest

log = logging.getLogger("larpixdaq.storage")

DEFAULT_PART_BYTES = 4 << 30
"""Rows per part before rolling over, in bytes of ``packets`` rows (36 bytes each)."""

Frame = tuple[FrameHeader, bytes | memoryview]


class StorageError(RuntimeError):
    """The run's files cannot be written (unwritable directory, full disk, ...)."""


class RunFileExists(StorageError):
    """A new run's files would take the name of files that are already there."""


class DiskFull(StorageError):
    """The data directory has too little room left for the next batch and the reserve."""


DEFAULT_RESERVE_BYTES = 64 << 20
"""Room a writer leaves free on its disk: a batch that would eat into it is not written
(:class:`DiskFull`), so the HDF5 library never meets a full disk half-way through a write,
which it does not survive (it can neither flush nor close the file after that)."""


@dataclass
class StorageCounters:
    """What storage counts for a run (the names are what the run record shows)."""

    frames_received: int = 0
    frames_written: int = 0
    frames_duplicate: int = 0
    frames_conflicting: int = 0  # other bytes under a seq already written: refused
    frames_missing: int = 0
    packets_written: int = 0
    packets_lost: int = 0
    words_received: int = 0
    messages_written: int = 0
    configs_written: int = 0
    messages_truncated: int = 0
    commits: int = 0
    restarts: int = 0
    part_names_taken: int = 0  # part names skipped because a file not of this run had them
    parts_rebuilt: int = 0  # killed parts copied afresh; the damaged original kept aside
    decode_errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "decode_errors"}
        out["decode_errors"] = sum(self.decode_errors.values())
        for kind, n in self.decode_errors.items():
            out[f"decode_errors_{kind}"] = n
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StorageCounters:
        c = cls()
        for k in c.__dict__:
            if k != "decode_errors" and isinstance(d.get(k), int):
                setattr(c, k, d[k])
        c.decode_errors = {k[len("decode_errors_"):]: int(v) for k, v in d.items()
                           if k.startswith("decode_errors_")}
        return c


#: The counters of what is in the files; after a write error they go back to the last commit.
_WRITTEN = ("packets_written", "frames_written", "messages_written", "configs_written")


@dataclass
class FlushedCommit:
    """A commit whose rows have been flushed: its journal line (taken at the flush), the
    row counts and counters a write error goes back to, and the seqs it acknowledges once
    ``synced`` (the disk's sync of the part) is done."""

    record: dict[str, Any]
    rows: tuple[int, int, int]
    written: dict[str, int]
    seqs: dict[Stream, int]
    synced: Future = field(default_factory=Future)


class RunWriter:
    """Writes one run's frames to its parts; see the module docstring."""

    def __init__(
        self,
        data_dir: str | Path,
        run_number: int,
        metadata: Mapping[str, Any] | None = None,
        *,
        part_bytes: int = DEFAULT_PART_BYTES,
        chunk_rows: int = 65536,
        compression: str | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        durable: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.durable = bool(durable)
        self.reserve_bytes = int(reserve_bytes)
        self.run_number = int(run_number)
        self.part_bytes = int(part_bytes)
        self.chunk_rows = chunk_rows
        self.compression = compression
        self.metadata = dict(metadata or {})
        self.counters = StorageCounters()
        self.trackers: dict[Stream, SeqTracker] = {}
        self.seen: dict[Stream, SeenFrames] = {}
        self.finished: set[Stream] = set()
        self.files: list[Path] = []
        self.part = 0
        self._writer: Hdf5Writer | None = None
        self._journal_path = journal_path(self.data_dir, self.run_number)
        self._uncommitted = False
        self._last_commit = (0, 0, 0)
        self._committed: dict[Stream, int] = {}  # per stream, the seq the journal has
        self._flushed: FlushedCommit | None = None  # rows on their way to the disk
        self._syncer: ThreadPoolExecutor | None = None
        self._held = False  # the HDF5 library still holds the part after a failed close
        self._repair_due = False  # the part still has to be cut back to its last commit
        self.closed = False
        self._configs_seen: list[np.ndarray] = []  # for the run's config_hash at close
        self._journal = JournalWriter(self._journal_path, self.durable)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self._journal_path.exists():
                self._resume()
            else:
                self._start()
        except OSError as exc:
            raise StorageError(
                f"cannot write run {self.run_number} in {self.data_dir}: {exc.strerror or exc}"
                f" ({exc.filename or self.data_dir}); check the directory exists, is writable "
                f"and the disk has room") from exc
        self._written_at_commit = {k: getattr(self.counters, k) for k in _WRITTEN}

    # -- files ---------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return part_path(self.data_dir, self.run_number, self.part)

    def _start(self) -> None:
        """A new run: refused if any file of its name is there (another DAQ's, or this one's
        from before its run database was replaced); otherwise journal first, then part 0."""
        stem = run_stem(self.run_number)
        taken = sorted(p.name for p in self.data_dir.glob(f"{stem}*")
                       if p.name == f"{stem}.h5" or p.name.startswith(f"{stem}-p"))
        if taken:
            raise RunFileExists(
                f"run {self.run_number}: {', '.join(taken)} already in {self.data_dir} and "
                "not written by this run (no journal names it); not touching it: move it "
                "away or write to another data directory")
        self._journal.create()
        self._journal.write({"open": True, "run_number": self.run_number,
                             "metadata": self.metadata})
        try:
            self._open_part(0)
        except RunFileExists:
            self._journal.write({"closed": True, "clean": False, "refused": True})
            self._journal.close()
            raise

    def _open_part(self, part: int) -> None:
        """Create part ``part`` exclusively, or the next free name after it."""
        while True:
            path = part_path(self.data_dir, self.run_number, part)
            meta = {**self.metadata, "run_number": self.run_number, "part": part,
                    "start_time": self.metadata.get("start_time", time.time())}
            try:
                writer = Hdf5Writer(path, chunk_rows=self.chunk_rows,
                                    compression=self.compression, swmr=True, run_metadata=meta)
            except FileExistsError:
                if part == 0:
                    raise RunFileExists(
                        f"run {self.run_number}: {path} already exists and was not written "
                        "by this run; not touching it") from None
                self.counters.part_names_taken += 1
                log.warning("run %d: %s exists and is not this run's; writing the next part "
                            "name instead", self.run_number, path.name)
                part += 1
                continue
            break
        self.part = part
        self._writer = writer
        self._configs_in_part = 0
        self._last_commit = (0, 0, 0)
        # The journal names every part this run created: only those may ever be repaired
        # or removed by a restart.
        self._journal.write({"opened_part": part, "path": str(path)})
        if self.durable:  # the new part's name, and the journal's for part 0
            self._journal.sync()
            sync_dir(self.data_dir)
        if path not in self.files:
            self.files.append(path)

    def _sync_finished(self, path: Path) -> None:
        """With :attr:`durable`, put a part closed by this process (its last rows, its
        clean-close mark and checksum) on the disk itself."""
        if self.durable:
            sync_file(path)

    def _resume(self) -> None:
        """Take the run up where its journal's last commit left it (:func:`plan_resume`):
        that commit's part cut back to it and sealed, parts opened after it removed."""
        try:
            plan = plan_resume(read_journal(self._journal_path))
        except JournalRefused as exc:
            raise StorageError(
                f"run {self.run_number} is already closed in {self.data_dir}"
                if str(exc) == "closed" else f"{self._journal_path}: {exc}") from None
        self.metadata = {**plan.metadata, **self.metadata}
        self.counters = StorageCounters.from_dict(plan.counters)
        self.counters.restarts += 1
        for stream, (seq, offset, done) in plan.streams.items():
            self.trackers[stream] = SeqTracker(seq, offset)
            self._committed[stream] = seq
            if done:
                self.finished.add(stream)
        self.files = list(plan.files)
        path = part_path(self.data_dir, self.run_number, plan.part)
        if path.exists() and path in plan.own:
            if not is_sealed(path):  # a finished part (closed at a rollover) stays as it is
                cut = self._repair_part(path, *plan.rows)
                # Rows below the commit that did not survive are lost, and said so.
                self.counters.packets_lost += max(0, -cut.get("packets", 0))
            if path not in self.files:
                self.files.append(path)
        elif plan.rows[0]:
            self.counters.packets_lost += plan.rows[0]
        for stale in plan.stale:
            # Nothing in them was acknowledged (their frames come again), and no one else's
            # file is among them.
            stale.unlink(missing_ok=True)
        self._configs_read_back()
        self._journal.reopen()
        # The next part is created with the first frame (or at close): a restart that is
        # itself cut short leaves no empty part behind.
        self.part = plan.next_part
        self._writer = None

    def _repair_part(self, path: Path, packets: int, messages: int, configs: int
                     ) -> dict[str, int]:
        """Cut a part back to its commit and seal it (:func:`repair_part`); a part rebuilt
        from its committed rows is counted, logged and named in the journal with the place
        its damaged original was kept."""
        result = repair_part(path, packets, messages, configs)
        seal(path)
        if result.rebuilt:
            if result.aside is not None and result.aside.exists():
                seal(result.aside)
            self.counters.parts_rebuilt += 1
            log.warning("run %d: %s could not be cut back in place (%s); its committed rows "
                        "were copied into a new %s, the damaged original kept as %s",
                        self.run_number, path.name, result.reason, path.name,
                        result.aside.name if result.aside else "-")
            record = {"rebuilt_part": str(path), "aside": str(result.aside),
                      "reason": result.reason, "cut": result.cut}
            self._journal.write_or_defer(record)
        return result.cut

    def _configs_read_back(self) -> None:
        """The configuration rows committed before a restart (the run's start is in them)."""
        for path in self.files:
            try:
                with Hdf5File(path) as f:
                    self._configs_seen.append(f.configs())
            except Exception as exc:  # a part cut short: its configs are only for the hash
                log.warning("run %d: configs of %s not read back: %s", self.run_number,
                            path.name, exc)

    def config_hash(self) -> str:
        """The operator's hash given at prepare, else that of the start configuration
        received (:func:`~larpixdaq.formats.rows.configs_hash`); '' if neither."""
        given = self.metadata.get("config_hash")
        if given:
            return str(given)
        seen = [c for c in self._configs_seen if len(c)]
        return configs_hash(np.concatenate(seen)) if seen else ""

    # -- frames --------------------------------------------------------------------------
    def _ensure_part(self) -> None:
        if self._writer is None:
            try:
                self._open_part(self.part)
            except OSError as exc:
                raise StorageError(f"cannot create {self.path}: {exc}") from exc

    def add(self, frames: Sequence[Frame]) -> list[Stream]:
        """Write a batch of frames in arrival order; returns streams that just finished."""
        if self.closed:
            raise StorageError(f"run {self.run_number} is closed")
        self._check_room(sum(len(p) for _, p in frames) + len(frames) * WORD_BYTES)
        self._ensure_part()
        c = self.counters
        c.frames_received += len(frames)
        keep = self._dedupe(frames)
        done: list[Stream] = []
        segment: list[Frame] = []
        try:
            for i, frame in enumerate(frames):
                if not keep[i]:
                    continue
                h = frame[0]
                if h.kind == KIND_DATA:
                    segment.append(frame)
                    continue
                self._write_data(segment)
                segment = []
                if h.kind == KIND_INFO:
                    text, cut = message_text(bytes(frame[1]))
                    c.messages_truncated += cut
                    self._writer.add_message(text, int(h.t_recv))
                    c.messages_written += 1
                    c.packets_written += 1
                    c.frames_written += 1
                elif h.kind == KIND_CONFIGS:
                    payload = bytes(frame[1])
                    if len(payload) % CONFIGS_DTYPE.itemsize:
                        # Not whole rows: a sender's bug, rejected and counted, never fatal.
                        c.decode_errors["configs_size"] = c.decode_errors.get(
                            "configs_size", 0) + 1
                        log.warning("run %d: rejected a configs frame of %d bytes from %s "
                                    "(not a multiple of the %d-byte row)", self.run_number,
                                    len(payload), h.source, CONFIGS_DTYPE.itemsize)
                    else:
                        rows = np.frombuffer(payload, dtype=CONFIGS_DTYPE)
                        self._writer.add_configs(rows)
                        self._configs_seen.append(rows.copy())
                        self._configs_in_part += len(rows)
                        c.configs_written += len(rows)
                        c.frames_written += 1
                if h.last:
                    self.finished.add(h.stream)
                    done.append(h.stream)
            self._write_data(segment)
        except (OSError, RuntimeError) as exc:
            raise StorageError(f"writing run {self.run_number} to {self.path} failed: "
                               f"{exc}") from exc
        self._uncommitted = True
        return done

    def _check_room(self, payload_bytes: int) -> None:
        """Refuse a batch the disk cannot take whole with the reserve left over.

        A payload word becomes one 36-byte row (16 bytes on the wire), and a write may
        complete the buffered chunk and start another: the batch needs at most that much.
        """
        row = PACKETS_DTYPE.itemsize
        need = (payload_bytes // WORD_BYTES + 2 * self.chunk_rows) * row + self.reserve_bytes
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError:
            return  # cannot tell: the write itself will say
        if free < need:
            raise DiskFull(
                f"writing run {self.run_number} to {self.path} stopped: no space left on "
                f"device ({free / 1e6:.1f} MB free, this batch and the reserve need "
                f"{need / 1e6:.1f} MB); every committed row is kept")

    def _dedupe(self, frames: Sequence[Frame]) -> np.ndarray:
        """One tracker decision per stream present in the batch (a handful of streams)."""
        n = len(frames)
        keep = np.ones(n, dtype=bool)
        by_stream: dict[Stream, list[int]] = {}
        for i, (h, _) in enumerate(frames):
            by_stream.setdefault(h.stream, []).append(i)
        c = self.counters
        for stream, idx in by_stream.items():
            hs = [frames[i][0] for i in idx]
            words = np.fromiter(
                ((len(frames[i][1]) - HEADER_BYTES) // WORD_BYTES if h.kind == KIND_DATA else 0
                 for i, h in zip(idx, hs, strict=True)), dtype=np.int64, count=len(idx))
            tracker = self.trackers.setdefault(stream, SeqTracker())
            v = tracker.observe(np.fromiter((h.seq for h in hs), np.int64, len(hs)),
                                np.fromiter((h.offset for h in hs), np.int64, len(hs)),
                                np.maximum(words, 0))
            keep[idx] = v.keep
            conflicts = self._judge(stream, [frames[i] for i in idx], v.keep)
            c.frames_duplicate += v.duplicates - conflicts
            c.frames_conflicting += conflicts
            c.frames_missing += v.missing_frames
            c.packets_lost += v.missing_words
        return keep

    def _judge(self, stream: Stream, frames: list[Frame], keep: np.ndarray) -> int:
        """Remember the digests of the frames kept; of those dropped at a seq already
        written, count the ones whose bytes differ from the written frame (conflicts)."""
        seen = self.seen.setdefault(stream, SeenFrames())
        conflicts = 0
        for (h, payload), kept in zip(frames, keep.tolist(), strict=True):
            digest = frame_digest(h.kind, h.io_group, h.offset, h.last, payload)
            if kept:
                seen.remember(h.seq, digest)
            elif seen.judge(h.seq, digest) is False:
                conflicts += 1
                if conflicts == 1:
                    log.warning("run %d: refused a frame of %s/%d at seq %d whose bytes differ "
                                "from the frame written there (kept)", self.run_number,
                                h.source, h.epoch, h.seq)
        return conflicts

    def _write_data(self, segment: list[Frame]) -> None:
        if not segment:
            return
        result = decode_data_messages([p for _, p in segment], [h.io_group for h, _ in segment])
        c = self.counters
        for kind, n in result.errors.items():
            c.decode_errors[kind] = c.decode_errors.get(kind, 0) + n
        c.words_received += result.n_words
        self._writer.append(result.rows)
        c.packets_written += len(result.rows)
        c.frames_written += len(segment)

    # -- commit, rollover, close ---------------------------------------------------------
    def committed(self) -> dict[Stream, int]:
        """The highest seq per stream that a journal line on the disk covers: what may be
        acknowledged (rows added or flushed since are not, until their commit ends)."""
        return dict(self._committed)

    def _snapshot(self) -> FlushedCommit:
        """The journal line for what has been flushed, taken at the flush (more rows may be
        added before it is written)."""
        w = self._writer
        return FlushedCommit(
            record={"part": self.part, "packets": w.n_rows, "messages": w.n_messages,
                    "configs": self._n_configs(), "files": [str(p) for p in self.files],
                    "streams": {stream_key(s): [t.last_seq, t.next_offset, s in self.finished]
                                for s, t in self.trackers.items()},
                    "counters": self.counters.as_dict()},
            rows=(w.n_rows, w.n_messages, self._n_configs()),
            written={k: getattr(self.counters, k) for k in _WRITTEN},
            seqs={s: t.last_seq for s, t in self.trackers.items()})

    def _journal_commit(self, flushed: FlushedCommit) -> None:
        """Write a commit's journal line (synced): from here on it may be acknowledged."""
        self._journal.write(flushed.record)
        self._journal.sync()
        self._last_commit = flushed.rows
        self._written_at_commit = flushed.written
        self._committed = flushed.seqs

    def _commit_record(self) -> None:
        self._journal_commit(self._snapshot())

    def _n_configs(self) -> int:
        return self._configs_in_part

    def commit(self) -> dict[Stream, int]:
        """Put everything added so far on disk and in the journal; returns :meth:`committed`.

        A commit started by :meth:`start_commit` ends first. With :attr:`durable` the rows
        are on the disk itself before the journal line that claims them is written."""
        if self.closed or self._writer is None:
            return self.committed()
        try:
            self._end_flushed(wait=True)
            if self._uncommitted:
                self._writer.flush()
                if self.durable:
                    sync_fd(self._writer.fileno())
                self.counters.commits += 1
                self._uncommitted = False
                self._commit_record()
                if self._writer.n_rows * PACKETS_DTYPE.itemsize >= self.part_bytes:
                    self._rollover()
        except (OSError, RuntimeError) as exc:
            raise StorageError(f"writing run {self.run_number} to {self.path} failed: "
                               f"{exc}") from exc
        return self.committed()

    def start_commit(self) -> dict[Stream, int] | None:
        """A commit that does not stop the caller while the disk writes: the rows are
        flushed to the kernel now and synced to the disk on a thread of their own, while
        more rows are added; :meth:`end_commit` (or the next call here, or :meth:`commit`)
        then writes the journal line. The disk's write time overlaps the decoding of the
        next frames instead of adding to it.

        Returns :meth:`committed` when a commit ended during the call (the one started
        before, which this waits for; or this one, when nothing is left to overlap: not
        :attr:`durable`, or the part is full and rolls over), else None."""
        if not self.durable:
            return self.commit()
        if self.closed or self._writer is None:
            return None
        if self._writer.n_rows * PACKETS_DTYPE.itemsize >= self.part_bytes:
            return self.commit()
        try:
            ended = self._end_flushed(wait=True)
            if self._uncommitted:
                self._writer.flush()
                self.counters.commits += 1
                self._uncommitted = False
                flushed = self._snapshot()
                if self._syncer is None:
                    self._syncer = ThreadPoolExecutor(1, thread_name_prefix="run-sync")
                flushed.synced = self._syncer.submit(sync_fd, self._writer.fileno())
                self._flushed = flushed
        except (OSError, RuntimeError) as exc:
            raise StorageError(f"writing run {self.run_number} to {self.path} failed: "
                               f"{exc}") from exc
        return ended

    def end_commit(self) -> dict[Stream, int] | None:
        """If the commit :meth:`start_commit` began has its rows on the disk: its journal
        line, and :meth:`committed`; None while it has not (or there is none)."""
        try:
            return self._end_flushed(wait=False)
        except (OSError, RuntimeError) as exc:
            raise StorageError(f"writing run {self.run_number} to {self.path} failed: "
                               f"{exc}") from exc

    @property
    def commit_under_way(self) -> bool:
        """Rows flushed by :meth:`start_commit` whose journal line is not written yet."""
        return self._flushed is not None

    def _end_flushed(self, wait: bool) -> dict[Stream, int] | None:
        flushed = self._flushed
        if flushed is None or (not wait and not flushed.synced.done()):
            return None
        self._flushed = None
        flushed.synced.result()  # the sync's error (a failing disk) is the commit's
        self._journal_commit(flushed)
        return self.committed()

    def _forget_flushed(self) -> None:
        """After a write error: the sync under way ends (the file is about to be closed)
        and its commit is not journaled; the rows it covers are cut with the rest."""
        flushed, self._flushed = self._flushed, None
        if flushed is not None:
            with contextlib.suppress(Exception):
                flushed.synced.result()
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)
            self._syncer = None

    def _part_attrs(self) -> dict[str, Any]:
        return {"part_packets": self._writer.n_rows, "end_time": time.time(),
                **self.counters.as_dict()}

    def _rollover(self) -> None:
        self._writer.set_run_metadata(self._part_attrs())
        self._writer.close(clean=True)
        seal(self.path)
        self._sync_finished(self.path)
        self._open_part(self.part + 1)
        self._commit_record()

    def close(self, clean: bool = True, extra: Mapping[str, Any] | None = None
              ) -> dict[str, Any]:
        """Commit, write the run's counters as attributes, close; the journal says closed."""
        if self.closed:
            return self.summary()
        try:
            self._ensure_part()  # a resumed run ends in a part of its own, with the totals
            self.commit()
            unfinished = [s for s in self.trackers if s not in self.finished]
            attrs = {**self._part_attrs(), "streams_unfinished": len(unfinished),
                     "parts": [str(p.name) for p in self.files],
                     "config_hash": self.config_hash(), **(extra or {})}
            self._writer.set_run_metadata(attrs)
            self._writer.close(clean=clean)
            if clean:
                seal(self.path)
            self._sync_finished(self.path)
            self._journal.write({"closed": True, "clean": clean,
                                 "counters": self.counters.as_dict()})
            self._journal.sync()
        finally:
            self.closed = True
            self._forget_flushed()
            with contextlib.suppress(OSError):
                self._journal.close()
        seal(self._journal_path)
        return self.summary()

    def abort(self) -> None:
        """Close after a write error: keep what is on disk readable.

        The part is cut back to the last commit, the state the journal (and the aggregator's
        acknowledgements) describe, and gets its checksum and clean-close mark. The reserve
        (:class:`DiskFull`) normally leaves room for that. If the HDF5 library met the full
        disk itself, it can no longer close the part: its "open for write" flags are then
        cleared in place, so any other program opens it as of the last commit, and the part
        is :attr:`held` (the library keeps it until the process ends; a restart repairs it).
        """
        if self.closed:
            return
        self.closed = True
        self._forget_flushed()
        with contextlib.suppress(OSError):  # a full disk cannot take the buffered tail
            self._journal.close()
        # Only what the last commit put on disk counts as written: the rest is cut.
        for name, value in self._written_at_commit.items():
            setattr(self.counters, name, value)
        if self._writer is None:
            return
        self._repair_due = True
        try:
            if not self._writer.closed:
                # The buffered rows would be cut right after: not written, so closing asks
                # the disk for no room.
                self._writer.close(clean=False, keep_buffered=False)
        except Exception as exc:  # the HDF5 library could not finish (full disk)
            log.error("closing %s after a write error failed too: %s", self.path, exc)
            self._held = True
            self._clear_flags()
            return
        self._repair()

    def _clear_flags(self) -> None:
        try:
            if self.path.exists():
                clear_write_flags(self.path)  # rewrites bytes in place: needs no room
        except Exception as err:
            log.error("could not clear the write flags of %s: %s", self.path, err)

    @property
    def held(self) -> bool:
        """The HDF5 library still holds the part (see :meth:`abort`): this process must
        not write HDF5 files any more."""
        return self._held

    def _repair(self) -> None:
        """Cut the part back to its last commit, mark it complete, make it read-only; if
        that cannot be done yet (no room), the part stays readable and it is tried again."""
        try:
            if self.path.exists():
                self._repair_part(self.path, *self._last_commit)
            self._repair_due = False
        except Exception as exc:
            log.warning("could not cut %s back to its last commit yet: %s", self.path, exc)
            self._clear_flags()

    def finish_failed(self, reason: str) -> bool:
        """After :meth:`abort`: finish the part if that is still due and say in the journal
        that the run ended with this error, so a restart does not take the run up again.
        False while that cannot be done (no room; or the part is :attr:`held`, left to a
        restart)."""
        if not self.closed or self._held:
            return False
        if self._repair_due:
            self._repair()
            if self._repair_due:
                return False
        try:
            self._journal.reopen()
            self._journal.write({"closed": True, "clean": False, "error": reason,
                                 "counters": self.counters.as_dict()})
            self._journal.close()
        except OSError as exc:
            log.warning("run %d: cannot close the journal yet: %s", self.run_number, exc)
            with contextlib.suppress(OSError):
                self._journal.close()
            return False
        seal(self._journal_path)
        return True

    def summary(self) -> dict[str, Any]:
        return {"files": [str(p) for p in self.files], "counters": self.counters.as_dict()}


def read_run_packets(paths: Sequence[str | Path]) -> np.ndarray:
    """Every ``packets`` row of a run's parts, in order (for tests and tools)."""
    arrays = []
    for p in paths:
        with Hdf5File(p) as f:
            arrays.append(f.read_packets())
    return np.concatenate(arrays) if arrays else np.zeros(0, PACKETS_DTYPE)


def read_run_messages(paths: Sequence[str | Path]) -> list[str]:
    """Every ``messages`` text of a run's parts, in order: markers, INFO frames, gaps (for
    tests and tools)."""
    out: list[str] = []
    for p in paths:
        with Hdf5File(p) as f:
            out += [m.decode() for m in f.messages()["message"]]
    return out
