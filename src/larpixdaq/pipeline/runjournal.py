"""The names of a run's files, its journal on disk, and making finished files read-only.

What storage, a restart and the tools need to know about a run's files without writing
any: ``run-000042.h5`` and its parts, ``run-000042.journal`` (JSON lines, a torn line
skipped), which runs a crashed storage left open, the read-only mode of a finished file, and
what a restarted writer takes up from a journal (:func:`plan_resume`, pure).
:mod:`.runfile` writes the files, through :class:`JournalWriter` for the journal.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from larpixdaq.pipeline.durable import sync_fd

Stream = tuple[str, int]

#: A finished part (and a closed journal): read-only for everyone.
SEALED_MODE = 0o444


def seal(path: Path) -> None:
    """Make a finished file read-only, so no later writer (of this DAQ or any other
    program) can change it by mistake."""
    os.chmod(path, SEALED_MODE)


def is_sealed(path: Path) -> bool:
    return (path.stat().st_mode & 0o777) == SEALED_MODE


def run_stem(run_number: int) -> str:
    return f"run-{run_number:06d}"


def part_path(data_dir: Path, run_number: int, part: int) -> Path:
    """``run-000042.h5`` for the first part, ``run-000042-p001.h5`` for the next ones."""
    stem = run_stem(run_number)
    return data_dir / (f"{stem}.h5" if part == 0 else f"{stem}-p{part:03d}.h5")


def journal_path(data_dir: Path, run_number: int) -> Path:
    return data_dir / f"{run_stem(run_number)}.journal"


def stream_key(stream: Stream) -> str:
    return f"{stream[0]}\x00{stream[1]}"


def key_stream(key: str) -> Stream:
    source, _, epoch = key.rpartition("\x00")
    return source, int(epoch)


class JournalWriter:
    """A run's journal, open for appending: one JSON line per record, handed to the kernel
    at once (a killed process loses no line); with ``durable``, :meth:`sync` waits until
    the disk holds them (a power cut loses none either). Files are never replaced: a new
    journal is created exclusively, an existing one only appended to."""

    def __init__(self, path: Path, durable: bool) -> None:
        self.path = path
        self.durable = durable
        self._file: IO[str] | None = None
        self._deferred: list[dict[str, Any]] = []

    @property
    def closed(self) -> bool:
        return self._file is None or self._file.closed

    def create(self) -> None:
        """A new run's journal (``FileExistsError`` if there is one)."""
        self._file = open(self.path, "x", encoding="utf-8")  # noqa: SIM115

    def reopen(self) -> None:
        """Append to the journal; a line torn by a crash (or a full disk) is ended first, so
        the next record starts on a line of its own; records deferred meanwhile go first."""
        self._file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115
        if self._file.tell():
            self._file.seek(self._file.tell() - 1)
            if self._file.read(1) != "\n":
                self._file.write("\n")
                self._file.flush()
        deferred, self._deferred = self._deferred, []
        for record in deferred:
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def write_or_defer(self, record: dict[str, Any]) -> None:
        """Write now, or at the next :meth:`reopen` if the journal is closed (a part
        repaired while a restart reads the journal)."""
        if self.closed:
            self._deferred.append(record)
        else:
            self.write(record)

    def sync(self) -> None:
        """With ``durable``, wait until the disk itself holds every line written."""
        if self.durable and self._file is not None:
            sync_fd(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """The journal's records; a torn line is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line torn by a crash or a full disk; the next one is whole
    return records


def unfinished_runs(data_dir: str | Path) -> list[int]:
    """Run numbers with a journal that was never closed (storage died during the run)."""
    out = []
    for p in sorted(Path(data_dir).glob("run-*.journal")):
        try:
            records = read_journal(p)
        except OSError:
            continue
        if records and records[0].get("open") and not any(r.get("closed") for r in records):
            out.append(int(records[0]["run_number"]))
    return out


class JournalRefused(ValueError):
    """A journal a writer must not take up: not a run journal, or a run already closed."""


@dataclass(frozen=True)
class ResumePlan:
    """What a writer restarted on an open journal takes up (:func:`plan_resume`)."""

    metadata: dict[str, Any]
    counters: dict[str, Any]  # as the last commit line recorded them
    streams: dict[Stream, tuple[int, int, bool]]  # last seq, next word offset, finished
    files: list[Path]  # the parts as of the last commit
    part: int  # the part the last commit wrote to
    rows: tuple[int, int, int]  # its committed packets, messages and configs rows
    own: frozenset[Path]  # every file the journal says this run created
    stale: list[Path]  # parts opened after the last commit: nothing in them acknowledged
    next_part: int  # the number the next part created gets


def plan_resume(records: list[dict[str, Any]]) -> ResumePlan:
    """What the journal ``records`` (:func:`read_journal`) leave to take up. Pure.

    Only the last commit line counts: what came after it was never acknowledged. Files the
    journal does not name as this run's own are never in :attr:`ResumePlan.own` or
    :attr:`ResumePlan.stale`, so a restart cannot touch another's file. Raises
    :class:`JournalRefused` for a journal that is not one, or of a run already closed."""
    if not records or not records[0].get("open"):
        raise JournalRefused("not a run journal")
    if any(r.get("closed") for r in records):
        raise JournalRefused("closed")
    commits = [r for r in records if "part" in r]
    last = commits[-1] if commits else {}
    part = int(last.get("part", 0))
    opened = {int(r["opened_part"]): Path(r["path"]) for r in records if "opened_part" in r}
    files = [Path(p) for p in last.get("files", [])]
    return ResumePlan(
        metadata=dict(records[0].get("metadata", {})),
        counters=dict(last.get("counters", {})),
        streams={key_stream(k): (int(seq), int(offset), bool(done))
                 for k, (seq, offset, done) in last.get("streams", {}).items()},
        files=files,
        part=part,
        rows=(int(last.get("packets", 0)), int(last.get("messages", 0)),
              int(last.get("configs", 0))),
        own=frozenset(files) | frozenset(opened.values()),
        stale=[path for number, path in sorted(opened.items()) if number > part],
        next_part=max([part, *opened]) + 1,
    )
