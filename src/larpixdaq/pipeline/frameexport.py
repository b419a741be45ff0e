"""Frames kept in frame files, written to a LArPix+HDF5 v2.4 file analysis can read.

The frames a dead producer left in its frame log (``.bin``, or ``.stale`` when their run was
over before a successor came) or its spill file are frames storage may never have written.
An operator exports them with ``larpix-daq convert FILE... OUT.h5``: the data frames become
``packets`` rows decoded as storage decodes them (:func:`decode_data_messages`), info frames
``messages`` rows (and their type-5 ``packets`` row), configs frames ``configs`` rows.

Order and duplicates: the same frame is often in two files (a spill file's frames are in the
frame log too; a successor that died logged its predecessor's frames again), so frames are
taken in ``(source, epoch, seq)`` order, each once; a second copy whose bytes differ from the
first (by the digest storage uses to tell a repeat from a conflict) is counted as
conflicting and left out, the first file given winning. Memory stays bounded: a first pass
keeps only a small index entry per frame (no payload), the second reads the payloads a
batch at a time.

The output is written to ``OUT.part`` (created exclusively) and given its name with a hard
link, which fails rather than replace a file: an existing file is never overwritten, and a
failed export leaves no file under the name analysis would open.

Pure here: :func:`plan_frames` (the order, the duplicates and the run filter); the rest is
the file shell.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from larpixdaq.formats.hdf5file import DEFAULT_CHUNK_ROWS, Hdf5Writer
from larpixdaq.formats.pacman import decode_data_messages
from larpixdaq.formats.rows import CONFIGS_DTYPE, MESSAGE, PACKET_TYPE_NAMES, message_text
from larpixdaq.pipeline.framefiles import FRAME_LOG, Damage, read_records, sniff
from larpixdaq.pipeline.framelog import RECORD
from larpixdaq.pipeline.protocol import KIND_CONFIGS, KIND_DATA, KIND_INFO
from larpixdaq.pipeline.sequence import frame_digest

DEFAULT_BATCH_FRAMES = 512
"""Data frames decoded and appended at once."""

@dataclass(frozen=True, order=True, slots=True)
class Entry:
    """One frame as the index keeps it: its place in its stream, then where it is."""

    source: str
    epoch: int
    seq: int
    file: int  # the input's index (the first given wins over a later copy)
    offset: int  # of the payload in that file
    length: int
    kind: str
    run: int
    io_group: int
    t_recv: float
    digest: bytes  # what makes the frame (:func:`~.sequence.frame_digest`)


@dataclass
class Plan:
    """The frames to write in order, and what was left out."""

    frames: list[Entry]
    duplicates: int = 0
    conflicting: int = 0
    other_runs: int = 0


def plan_frames(entries: Sequence[Entry], run: int | None = None) -> Plan:
    """The frames to write: those of ``run`` (all if None), in ``(source, epoch, seq)``
    order, one per place (the copy of the lowest ``file``, then ``offset``); copies that
    differ from it count as conflicting, the others as duplicates. Pure."""
    plan = Plan([])
    taken: Entry | None = None
    for e in sorted(entries):
        if run is not None and e.run != run:
            plan.other_runs += 1
            continue
        if taken is not None and (e.source, e.epoch, e.seq) == (taken.source, taken.epoch,
                                                               taken.seq):
            if e.digest == taken.digest and e.kind == taken.kind:
                plan.duplicates += 1
            else:
                plan.conflicting += 1
            continue
        taken = e
        plan.frames.append(e)
    return plan


@dataclass
class ExportSummary:
    """What an export did."""

    inputs: list[str]
    output: str
    run: int | None = None
    frames_read: int = 0
    frames_written: int = 0
    frames_duplicate: int = 0
    frames_conflicting: int = 0
    frames_other_runs: int = 0
    messages_written: int = 0
    messages_truncated: int = 0
    configs_written: int = 0
    configs_rejected: int = 0
    n_rows: int = 0
    rows_by_type: dict[str, int] = field(default_factory=dict)
    decode_errors: dict[str, int] = field(default_factory=dict)
    torn_tails: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[dict[str, Any]] = field(default_factory=list)
    damaged_count: int = 0
    streams: list[dict[str, Any]] = field(default_factory=list)  # what each stream gave

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _index(paths: Sequence[Path], summary: ExportSummary) -> list[Entry]:
    entries = []
    for i, path in enumerate(paths):
        for item in read_records(path):
            if isinstance(item, Damage):
                where = {"file": str(path), "offset": item.offset, "bytes": item.length,
                         "reason": item.reason}
                if item.torn:
                    summary.torn_tails.append(where)
                else:
                    summary.damaged_count += 1
                    if len(summary.damaged) < 20:
                        summary.damaged.append(where)
                continue
            h = item.header
            entries.append(Entry(
                h.source, h.epoch, h.seq, i,
                item.offset + RECORD.size + len(item.header_bytes), item.payload_len,
                h.kind, h.run, h.io_group, h.t_recv,
                frame_digest(h.kind, h.io_group, h.offset, h.last, item.payload)))
    summary.frames_read = len(entries)
    return entries


def _publish(partial: Path, out: Path) -> None:
    """Give the finished file its name without ever replacing one (a hard link fails on an
    existing name; a file system without them gets a rename after a last check)."""
    try:
        os.link(partial, out)
    except FileExistsError:
        raise FileExistsError(f"{out} exists (written meanwhile); the export is left "
                              f"as {partial}") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if out.exists():
            raise FileExistsError(f"{out} exists; the export is left as {partial}") from None
        os.rename(partial, out)
        return
    partial.unlink()


class _Writer:
    """Writes planned frames to an open :class:`Hdf5Writer`, data frames a batch at a time."""

    def __init__(self, writer: Hdf5Writer, files: list[BinaryIO], summary: ExportSummary,
                 batch: int) -> None:
        self.writer, self.files, self.summary, self.batch = writer, files, summary, batch
        self.by_type = np.zeros(256, dtype=np.int64)
        self._data: list[Entry] = []

    def _payload(self, e: Entry) -> bytes:
        f = self.files[e.file]
        f.seek(e.offset)
        return f.read(e.length)

    def add(self, e: Entry) -> None:
        s = self.summary
        if e.kind == KIND_DATA:
            self._data.append(e)
            if len(self._data) >= self.batch:
                self.flush()
            return
        self.flush()
        payload = self._payload(e)
        if e.kind == KIND_INFO:
            text, cut = message_text(payload)
            s.messages_truncated += cut
            self.writer.add_message(text, int(e.t_recv))
            self.by_type[MESSAGE] += 1
            s.messages_written += 1
        elif e.kind == KIND_CONFIGS:
            if len(payload) % CONFIGS_DTYPE.itemsize:
                s.configs_rejected += 1
                return
            rows = np.frombuffer(payload, dtype=CONFIGS_DTYPE)
            self.writer.add_configs(rows)
            s.configs_written += len(rows)
        s.frames_written += 1

    def flush(self) -> None:
        if not self._data:
            return
        batch, self._data = self._data, []
        result = decode_data_messages([self._payload(e) for e in batch],
                                      [e.io_group for e in batch])
        self.writer.append(result.rows)
        self.by_type += np.bincount(result.rows["packet_type"], minlength=256)
        for kind, n in result.errors.items():
            self.summary.decode_errors[kind] = self.summary.decode_errors.get(kind, 0) + n
        self.summary.frames_written += len(batch)


def export_frames(
    inputs: Sequence[str | Path],
    out_path: str | Path,
    *,
    run: int | None = None,
    batch_frames: int = DEFAULT_BATCH_FRAMES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    compression: str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Write the frames of frame files ``inputs`` to a new LArPix+HDF5 v2.4 file (see the
    module docstring). Raises FileExistsError (the output or ``OUT.part`` exists),
    FileNotFoundError, ValueError (no input, an input that is no frame file, or the output
    among the inputs) and OSError. Damaged records are skipped and reported, never raised."""
    paths = [Path(p) for p in inputs]
    out = Path(out_path)
    if not paths:
        raise ValueError("no frame file to export")
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such file")
        if sniff(p) is None:
            raise ValueError(f"{p} is not a producer frame log or spill file")
        if out.exists() and p.resolve() == out.resolve():
            raise ValueError(f"output {out} is one of the inputs")
    if out.exists():
        raise FileExistsError(f"{out} exists; it is never replaced")
    summary = ExportSummary([str(p) for p in paths], str(out), run)
    plan = plan_frames(_index(paths, summary), run)
    summary.frames_duplicate = plan.duplicates
    summary.frames_conflicting = plan.conflicting
    summary.frames_other_runs = plan.other_runs
    if not plan.frames:
        raise ValueError("no frame to export" + (f" of run {run}" if run is not None else "")
                         + f" in {', '.join(summary.inputs)} (see larpix-daq inspect)")
    for e in plan.frames:
        last = summary.streams[-1] if summary.streams else None
        if last is not None and (last["source"], last["epoch"]) == (e.source, e.epoch):
            last["missing"] += e.seq - last["seq_last"] - 1
            last["seq_last"] = e.seq
            last["frames"] += 1
        else:
            summary.streams.append({"source": e.source, "epoch": e.epoch, "seq_first": e.seq,
                                    "seq_last": e.seq, "frames": 1, "missing": 0})
    partial = out.with_name(out.name + ".part")
    meta = {"source_files": summary.inputs, "source_format": FRAME_LOG,
            **({"run_number": run} if run is not None else {}), **(metadata or {})}
    writer = Hdf5Writer(partial, chunk_rows=chunk_rows, compression=compression,
                        run_metadata=meta)
    try:
        with contextlib.ExitStack() as stack:
            files = [stack.enter_context(open(p, "rb")) for p in paths]
            w = _Writer(writer, files, summary, batch_frames)
            for i, e in enumerate(plan.frames, start=1):
                w.add(e)
                if progress is not None and (i % batch_frames == 0 or i == len(plan.frames)):
                    progress(i, len(plan.frames))
            w.flush()
        writer.set_run_metadata({
            "frames_written": summary.frames_written,
            "frames_duplicate": summary.frames_duplicate,
            "frames_conflicting": summary.frames_conflicting,
            "decode_errors": sum(summary.decode_errors.values()),
            "damaged_records": summary.damaged_count,
            "torn_tails": len(summary.torn_tails),
            "streams": [f"{s['source']}/{s['epoch']} seq {s['seq_first']}-{s['seq_last']}, "
                        f"{s['missing']} missing" for s in summary.streams],
        })
        writer.close(clean=True)
    except BaseException:
        writer.close(clean=False)
        partial.unlink(missing_ok=True)
        raise
    _publish(partial, out)
    summary.rows_by_type = {PACKET_TYPE_NAMES.get(t, f"type_{t}"): int(n)
                            for t, n in enumerate(w.by_type) if n}
    summary.n_rows = int(w.by_type.sum())
    return summary
