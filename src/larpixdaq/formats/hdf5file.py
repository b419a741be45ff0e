"""LArPix+HDF5 v2.4 files: the format analysis reads, written at array speed.

The layout (``/_header``, ``packets``, ``messages``, ``configs``) is the one the field's
reference reader (larpix-control 3.7 ``hdf5format.from_file``) opens; everything this
module adds on top of it is invisible to that reader:

* ``packets`` is written in large, explicit chunks (``chunk_rows``, default 65536 rows =
  2.25 MiB) with optional gzip/lzf compression, so a run of 1e9 packets is ~15k chunks
  rather than the millions of tiny chunks h5py would guess.
* Small appends are buffered and only whole chunks are written, so a chunk is written once
  and never re-read to be completed; :meth:`Hdf5Writer.flush` writes the partial tail.
* ``swmr=True`` creates the file with ``libver='latest'`` and switches on SWMR after the
  datasets exist, so monitors can read a file while the run writes it.
* On a clean close ``/_header`` gets ``clean_close = 1`` and ``packets_sha256``: the SHA-256
  of the ``packets`` dataset's raw bytes (36-byte little-endian packed rows, in row order),
  computed while writing. A file without ``clean_close = 1`` was not closed cleanly (crash,
  kill, or a run still in progress); :func:`verify_checksum` recomputes the digest.
* Run metadata lives as attributes of a ``/run`` group (scalars, strings and flat lists as
  native HDF5 attributes, anything else as JSON text).
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from larpixdaq.errors import FormatError
from larpixdaq.formats.rows import (
    CONFIGS_DTYPE,
    FILE_VERSION,
    MESSAGE,
    MESSAGES_DTYPE,
    PACKET_TYPE_NAMES,
)
from larpixdaq.formats.rows import PACKETS_DTYPE as PACKETS_DTYPE

DEFAULT_CHUNK_ROWS = 65536
CHECKSUM_ATTR = "packets_sha256"
COMPRESSIONS = (None, "gzip", "lzf")
_PACKET_TYPES_ATTR = "".join(f"\n{k}: '{v}'," for k, v in PACKET_TYPE_NAMES.items()) + "\n"
_SMALL_CHUNK = 1024


def _normalise_compression(compression: str | None) -> str | None:
    if compression in (None, "none", ""):
        return None
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of none, gzip, lzf; got {compression!r}")
    return compression


def _attr_value(value: Any) -> Any:
    """A value HDF5 can store as an attribute; anything structured goes in as JSON text."""
    if isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_)):
        return value
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return np.asarray(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return np.asarray(value, dtype=h5py.string_dtype())
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    """Attribute values as plain Python objects (for JSON output and comparisons)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Hdf5Writer:
    """Writes one new LArPix+HDF5 v2.4 file; use as a context manager.

    ``append`` takes arrays of ``PACKETS_DTYPE`` rows (what the PACMAN decoder returns).
    Leaving the ``with`` block through an exception closes the file without the clean-close
    mark, so a reader can tell an aborted file from a finished one.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        compression: str | None = None,
        compression_level: int | None = None,
        swmr: bool = False,
        overwrite: bool = False,
        run_metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.path = Path(path)
        self.chunk_rows = int(chunk_rows)
        self.compression = _normalise_compression(compression)
        self.swmr = swmr
        opts = compression_level if self.compression == "gzip" else None
        self._closed = False
        # Without overwrite the file is created exclusively (O_EXCL): an existing file, even
        # one that appears between a check and the open, is never replaced.
        try:
            self._file = h5py.File(self.path, "w" if overwrite else "x",
                                   libver="latest" if swmr else None)
        except FileExistsError:
            raise FileExistsError(
                f"{self.path} exists (pass overwrite=True to replace it)") from None
        try:
            now = time.time()
            header = self._file.create_group("_header")
            header.attrs["version"] = FILE_VERSION
            header.attrs["created"] = now
            header.attrs["modified"] = now
            header.attrs["clean_close"] = 0
            header.attrs["checksum_algorithm"] = "sha256 of the packets dataset bytes, row order"
            self._file.create_group("run")
            self._packets = self._file.create_dataset(
                "packets",
                shape=(0,),
                maxshape=(None,),
                dtype=PACKETS_DTYPE,
                chunks=(self.chunk_rows,),
                compression=self.compression,
                compression_opts=opts,
            )
            self._packets.attrs["packet_types"] = _PACKET_TYPES_ATTR
            self._messages = self._file.create_dataset(
                "messages", shape=(0,), maxshape=(None,), dtype=MESSAGES_DTYPE,
                chunks=(_SMALL_CHUNK,),
            )
            self._configs = self._file.create_dataset(
                "configs", shape=(0,), maxshape=(None,), dtype=CONFIGS_DTYPE, chunks=(64,)
            )
            self._configs.attrs["asic_version"] = "2"
            if run_metadata:
                self.set_run_metadata(run_metadata)
            if swmr:
                self._file.swmr_mode = True
        except BaseException:
            self._file.close()
            raise
        self._buffer = np.empty(self.chunk_rows, dtype=PACKETS_DTYPE)
        self._bytes_dtype = np.dtype(f"V{PACKETS_DTYPE.itemsize}")
        self._buffered = 0
        self._written = 0
        self._n_messages = 0
        self._sha = _BackgroundDigest()

    # -- state -------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        """Rows appended so far, written or still buffered."""
        return self._written + self._buffered

    @property
    def n_messages(self) -> int:
        return self._n_messages

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path} is closed")

    # -- packets -----------------------------------------------------------------------
    def _write(self, *parts: np.ndarray) -> None:
        """One resize, then each part written in order and hashed."""
        total = sum(len(p) for p in parts)
        if total == 0:
            return
        start = self._written
        self._packets.resize((start + total,))
        for part in parts:
            if len(part):
                part = np.ascontiguousarray(part).view(PACKETS_DTYPE)
                self._packets.write_direct(part, dest_sel=np.s_[start : start + len(part)])
                self._sha.update(part)
                start += len(part)
        self._written = start
        if self.swmr:
            self._packets.flush()

    def append(self, rows: np.ndarray) -> None:
        """Append rows of ``PACKETS_DTYPE``; only whole chunks reach the file until flush()."""
        self._check_open()
        if not isinstance(rows, np.ndarray) or rows.dtype != PACKETS_DTYPE or rows.ndim != 1:
            raise TypeError("append() takes a 1-D numpy array of PACKETS_DTYPE rows")
        n = len(rows)
        if n == 0:
            return
        # Copies go through plain 36-byte views: numpy copies a packed structured dtype
        # field by field, ~30x slower than moving the bytes.
        src = rows.view(self._bytes_dtype)
        buf = self._buffer.view(self._bytes_dtype)
        room = self.chunk_rows - self._buffered
        if n < room:
            buf[self._buffered : self._buffered + n] = src
            self._buffered += n
            return
        # Fill the buffer to a whole chunk, write it and as many whole chunks of `rows` as
        # there are, keep the remainder buffered.
        rest = src[room:]
        whole = (len(rest) // self.chunk_rows) * self.chunk_rows
        if self._buffered:
            buf[self._buffered :] = src[:room]
            self._write(buf, rest[:whole])
        else:
            self._write(src[: room + whole])
        tail = rest[whole:]
        buf[: len(tail)] = tail
        self._buffered = len(tail)

    def flush(self) -> None:
        """Write the buffered rows and push everything to disk (SWMR readers then see it)."""
        self._check_open()
        if self._buffered:
            self._write(self._buffer[: self._buffered])
            self._buffered = 0
        self._file.flush()

    def fileno(self) -> int:
        """The operating system's descriptor of the open file, so that a caller that must
        know the rows are on the disk itself (not only the kernel's cache) can sync it after
        :meth:`flush`."""
        self._check_open()
        return int(self._file.id.get_vfd_handle())

    # -- messages, configs, metadata ---------------------------------------------------
    def add_message(self, text: str, timestamp: int) -> int:
        """Log a text message: a ``messages`` row and a type-5 ``packets`` row pointing at it.

        The type-5 row's ``counter`` is the message's index in ``messages`` (the reference
        reader looks the text up by it). Returns that index.
        """
        self._check_open()
        data = text.encode("utf-8")
        if len(data) > 64:
            raise ValueError(f"a message holds at most 64 bytes of UTF-8, got {len(data)}")
        index = self._n_messages
        row = np.zeros(1, dtype=MESSAGES_DTYPE)
        row["message"] = data
        row["timestamp"] = timestamp
        row["index"] = index
        self._messages.resize((index + 1,))
        self._messages[index : index + 1] = row
        if self.swmr:
            self._messages.flush()
        self._n_messages = index + 1
        prow = np.zeros(1, dtype=PACKETS_DTYPE)
        prow["packet_type"] = MESSAGE
        prow["timestamp"] = timestamp
        prow["counter"] = index
        self.append(prow)
        return index

    def add_configs(self, rows: np.ndarray) -> None:
        """Append chip register snapshots (rows of ``CONFIGS_DTYPE``)."""
        self._check_open()
        if not isinstance(rows, np.ndarray) or rows.dtype != CONFIGS_DTYPE:
            raise TypeError("add_configs() takes a numpy array of CONFIGS_DTYPE rows")
        rows = np.atleast_1d(rows)
        n0 = self._configs.shape[0]
        self._configs.resize((n0 + len(rows),))
        self._configs[n0:] = rows
        if self.swmr:
            self._configs.flush()

    def add_message_rows(self, rows: np.ndarray) -> None:
        """Append ``messages`` rows as they are (their type-5 ``packets`` rows are the
        caller's): for copying a part whose rows already point at their messages."""
        self._check_open()
        if not isinstance(rows, np.ndarray) or rows.dtype != MESSAGES_DTYPE or rows.ndim != 1:
            raise TypeError("add_message_rows() takes a 1-D numpy array of MESSAGES_DTYPE rows")
        n0 = self._n_messages
        self._messages.resize((n0 + len(rows),))
        self._messages[n0:] = rows
        if self.swmr:
            self._messages.flush()
        self._n_messages = n0 + len(rows)

    def set_header(self, attrs: Mapping[str, Any]) -> None:
        """Extra ``/_header`` attributes (a repaired copy keeps its original ``created``
        and says when it was ``recovered``); the clean-close mark is :meth:`close`'s."""
        self._check_open()
        header = self._file["_header"]
        for key, value in attrs.items():
            header.attrs[str(key)] = _attr_value(value)

    def set_run_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Store run metadata as attributes of ``/run`` (structured values as JSON text)."""
        self._check_open()
        group = self._file["run"]
        for key, value in metadata.items():
            group.attrs[str(key)] = _attr_value(value)

    # -- closing -----------------------------------------------------------------------
    def close(self, clean: bool = True, keep_buffered: bool = True) -> None:
        """Flush and close; a clean close records the modified time, the flag and checksum.

        ``keep_buffered=False`` (only with ``clean=False``) drops rows not yet written to
        the file, for a caller that cuts the file back to an earlier point anyway."""
        if self._closed:
            return
        try:
            if clean:
                self.flush()
                header = self._file["_header"]
                header.attrs["modified"] = time.time()
                header.attrs[CHECKSUM_ATTR] = self._sha.hexdigest()
                header.attrs["clean_close"] = 1
            else:
                # Whatever was buffered is still data: keep it, but leave no clean-close mark.
                if self._buffered and keep_buffered:
                    self._write(self._buffer[: self._buffered])
                    self._buffered = 0
                self._file["_header"].attrs["modified"] = time.time()
        finally:
            self._sha.close()
            self._closed = True
            self._file.close()

    def __enter__(self) -> Hdf5Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(clean=exc_type is None)


class _BackgroundDigest:
    """SHA-256 of everything written, computed on a thread of its own.

    Hashing costs a third of a writer's time per row; hashlib lets go of the GIL for large
    buffers, so a second core hashes one batch while this thread decodes and writes the
    next. Each update is a copy (the caller's buffer is reused at once) and the queue is
    bounded, so the hasher can never fall far behind nor hold much memory.
    """

    def __init__(self, depth: int = 8) -> None:
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                self._sha.update(data)
            except BaseException as exc:  # kept and raised by hexdigest()
                self._error = exc

    def update(self, rows: np.ndarray) -> None:
        if self._thread.is_alive():
            self._queue.put(rows.tobytes())

    def close(self) -> None:
        """Wait for everything queued to be hashed; the thread ends."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()


# ======================================================================================
# Reading
# ======================================================================================


@dataclass
class Hdf5Info:
    """What a LArPix+HDF5 file says about itself, without reading its rows."""

    path: Path
    version: str
    created: float | None
    modified: float | None
    header: dict[str, Any]
    run: dict[str, Any]
    n_packets: int
    n_messages: int
    n_configs: int
    clean_close: bool | None
    checksum: str | None
    chunk_rows: int | None
    compression: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def _held_by_writer(exc: OSError) -> bool:
    text = str(exc).lower()
    return "already open for write" in text or "lock" in text


def open_h5_readonly(path: str | Path, swmr: bool = False) -> h5py.File:
    """Open an HDF5 file read-only, following it in SWMR mode if a SWMR writer has it open.

    A file being recorded refuses a plain read-only open; a run in progress is still worth
    reading, so the open is retried in SWMR mode before giving up with a clear reason.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    try:
        return h5py.File(path, "r", swmr=swmr, libver="latest" if swmr else None)
    except OSError as exc:
        if not _held_by_writer(exc):
            raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from exc
        if not swmr:
            try:
                return h5py.File(path, "r", swmr=True, libver="latest")
            except OSError:
                pass
        raise FormatError(
            f"{path}: the file is open for writing by another process that does not use "
            "SWMR mode; it can be read once the writer closes it"
        ) from exc


class H5Reader:
    """An HDF5 file opened for reading and checked to be of the expected kind: the file is
    closed again at once if ``_validate`` refuses it, so no handle leaks on a bad file."""

    def __init__(self, path: str | Path, *, swmr: bool = False) -> None:
        self.path = Path(path)
        self.swmr = swmr
        self._file = open_h5_readonly(self.path, swmr=swmr)
        try:
            self._validate()
        except BaseException:
            self._file.close()
            raise

    def _validate(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> H5Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hdf5File(H5Reader):
    """An open LArPix+HDF5 v2.x file for reading (optionally while another process writes)."""

    def _validate(self) -> None:
        f = self._file
        if "_header" not in f or "version" not in f["_header"].attrs:
            raise FormatError(f"{self.path}: not a LArPix+HDF5 file (no /_header version)")
        version = _plain(f["_header"].attrs["version"])
        if not str(version).startswith("2."):
            raise FormatError(f"{self.path}: LArPix+HDF5 version {version}, this reads 2.x")
        if "packets" not in f or not isinstance(f["packets"], h5py.Dataset):
            raise FormatError(f"{self.path}: no 'packets' dataset")
        if version == FILE_VERSION and f["packets"].dtype != PACKETS_DTYPE:
            raise FormatError(
                f"{self.path}: 'packets' has dtype {f['packets'].dtype}, not the v2.4 layout"
            )
        self.version = str(version)

    @property
    def packets(self) -> h5py.Dataset:
        return self._file["packets"]

    def refresh(self) -> None:
        """See rows a SWMR writer added since opening (or the last refresh)."""
        for name in ("packets", "messages", "configs"):
            if name in self._file:
                self._file[name].refresh()

    @property
    def n_packets(self) -> int:
        return int(self.packets.shape[0])

    def info(self) -> Hdf5Info:
        f = self._file
        header = {k: _plain(v) for k, v in f["_header"].attrs.items()}
        run = {k: _plain(v) for k, v in f["run"].attrs.items()} if "run" in f else {}
        clean = header.get("clean_close")
        return Hdf5Info(
            path=self.path,
            version=self.version,
            created=header.get("created"),
            modified=header.get("modified"),
            header=header,
            run=run,
            n_packets=self.n_packets,
            n_messages=int(f["messages"].shape[0]) if "messages" in f else 0,
            n_configs=int(f["configs"].shape[0]) if "configs" in f else 0,
            clean_close=None if clean is None else bool(clean),
            checksum=header.get(CHECKSUM_ATTR),
            chunk_rows=self.packets.chunks[0] if self.packets.chunks else None,
            compression=self.packets.compression,
        )

    def read_packets(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of ``packets`` as a ``PACKETS_DTYPE`` array."""
        n = self.n_packets
        stop = n if stop is None else min(stop, n)
        start = max(0, start)
        if stop <= start:
            return np.empty(0, dtype=self.packets.dtype)
        out = np.empty(stop - start, dtype=self.packets.dtype)
        try:
            self.packets.read_direct(out, source_sel=np.s_[start:stop])
        except (OSError, RuntimeError, ValueError) as exc:
            raise FormatError(
                f"{self.path}: cannot read packets rows {start}:{stop}; the file is truncated "
                f"or corrupt ({exc})"
            ) from exc
        return out

    def iter_packets(self, chunk_rows: int = 1 << 20) -> Iterator[np.ndarray]:
        """The ``packets`` rows in arrays of at most ``chunk_rows``, for files beyond memory."""
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        n = self.n_packets
        for start in range(0, n, chunk_rows):
            yield self.read_packets(start, start + chunk_rows)

    def messages(self) -> np.ndarray:
        if "messages" not in self._file:
            return np.empty(0, dtype=MESSAGES_DTYPE)
        return self._read_all("messages")

    def configs(self) -> np.ndarray:
        if "configs" not in self._file:
            return np.empty(0, dtype=CONFIGS_DTYPE)
        return self._read_all("configs")

    def _read_all(self, name: str) -> np.ndarray:
        try:
            return self._file[name][()]
        except (OSError, RuntimeError) as exc:
            raise FormatError(f"{self.path}: cannot read '{name}' ({exc})") from exc


def open_file(path: str | Path, *, swmr: bool = False) -> Hdf5File:
    """Open a LArPix+HDF5 file for reading; FormatError if it is not one."""
    return Hdf5File(path, swmr=swmr)


def is_hdf5_file(path: str | Path) -> bool:
    """True if ``path`` is a LArPix+HDF5 v2.x file."""
    try:
        with open_h5_readonly(path) as f:
            return "_header" in f and "packets" in f
    except (OSError, FormatError):
        return False


def read_packets(path: str | Path, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of a file's ``packets`` dataset."""
    with Hdf5File(path) as f:
        return f.read_packets(start, stop)


def iter_packets(path: str | Path, chunk_rows: int = 1 << 20) -> Iterator[np.ndarray]:
    """A file's ``packets`` rows in bounded arrays."""
    with Hdf5File(path) as f:
        yield from f.iter_packets(chunk_rows)


def packets_digest(path: str | Path, chunk_rows: int = 1 << 20) -> str:
    """SHA-256 of the ``packets`` dataset bytes, as stored in ``packets_sha256``."""
    sha = hashlib.sha256()
    with Hdf5File(path) as f:
        for rows in f.iter_packets(chunk_rows):
            sha.update(np.ascontiguousarray(rows).data)
    return sha.hexdigest()


def verify_checksum(path: str | Path) -> bool | None:
    """True/False if the stored checksum matches/does not; None if the file has none."""
    with Hdf5File(path) as f:
        stored = f.info().checksum
    if stored is None:
        return None
    return packets_digest(path) == stored
