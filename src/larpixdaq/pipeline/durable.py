"""Putting bytes on the disk itself, not only in the kernel's page cache.

A write that has reached the kernel survives the death of the process that made it, but not
a power cut or a kernel crash: the page cache is written back some seconds later. What storage
acknowledges upstream is forgotten by every earlier hop, so it must survive those too; the
functions here are the one place that asks the disk for it (``fsync``), for a file's data and
for the directory entry that names a new file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def sync_fd(fd: int) -> None:
    """Wait until the disk holds everything written to the open file ``fd``."""
    os.fsync(fd)


def sync_file(path: str | Path) -> None:
    """The same for a file by name (read-only files included: ``fsync`` needs no write
    access on Linux)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: str | Path) -> None:
    """Make the names of files created (or renamed) in directory ``path`` durable: a new
    file whose data was synced can still vanish in a power cut if its entry was not."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a crash at any moment leaves either the old
    file or the new one, whole: a temporary file beside it, synced, renamed over it, then
    the directory synced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            sync_fd(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)
