"""The raw PACMAN message file (v0.0): ZeroMQ messages stored exactly as they arrived.

This is the format larpix-control's ``rawhdf5format`` reads and writes, so a run recorded
here can be converted by the field's tools and theirs by ours:

* group ``meta`` with attributes ``version`` ("0.0"), ``created``, ``modified`` (UNIX
  seconds) and ``io_version`` ("0.0", the PACMAN message encoding);
* dataset ``msgs``: one variable-length ``uint8`` array per message;
* dataset ``msg_headers``: one row per message, a single field ``io_groups`` (u1), because
  the io_group is not in the message: it is which board the message came from.

Both datasets are resizable, gzip-compressed and written in explicit chunks; the writer can
run in SWMR mode so the converter or a monitor can follow a file being recorded. HDF5 does
not promise SWMR for variable-length data, so the writer flushes the whole file (global
heap included) after every append: a reader sees whole appends, and a read that races an
append may fail with FormatError and should simply be retried.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import H5Reader, open_h5_readonly

RAW_VERSION = "0.0"
IO_VERSION = "0.0"
MSGS_DTYPE = h5py.vlen_dtype(np.dtype("u1"))
MSG_HEADERS_DTYPE = np.dtype([("io_groups", "u1")])
DEFAULT_CHUNK_MESSAGES = 1024


def _io_groups_array(io_groups: int | Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(io_groups)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ValueError(f"io_groups has {arr.size} entries for {n} messages")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("io_groups must be in 0..255")
    return arr.astype(np.uint8)


class RawWriter:
    """Appends PACMAN messages to a new raw file; use as a context manager."""

    def __init__(
        self,
        path: str | Path,
        *,
        chunk_messages: int = DEFAULT_CHUNK_MESSAGES,
        swmr: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists (pass overwrite=True to replace it)")
        self.swmr = swmr
        self._file = h5py.File(self.path, "w", libver="latest" if swmr else None)
        now = time.time()
        meta = self._file.create_group("meta")
        meta.attrs["version"] = RAW_VERSION
        meta.attrs["created"] = now
        meta.attrs["modified"] = now
        meta.attrs["io_version"] = IO_VERSION
        common: dict[str, Any] = dict(
            shape=(0,), maxshape=(None,), chunks=(chunk_messages,), compression="gzip"
        )
        self._msgs = self._file.create_dataset("msgs", dtype=MSGS_DTYPE, **common)
        self._headers = self._file.create_dataset("msg_headers", dtype=MSG_HEADERS_DTYPE, **common)
        if swmr:
            self._file.swmr_mode = True
        self._n = 0
        self._closed = False

    @property
    def n_messages(self) -> int:
        return self._n

    def append(
        self, messages: Sequence[bytes], io_groups: int | Sequence[int] | np.ndarray
    ) -> None:
        """Append messages (bytes-like) with their io_group (one for all, or one each)."""
        if self._closed:
            raise ValueError(f"{self.path} is closed")
        n = len(messages)
        if n == 0:
            return
        groups = _io_groups_array(io_groups, n)
        msgs = np.empty(n, dtype=object)
        for i, m in enumerate(messages):  # one per message: vlen storage needs an array each
            msgs[i] = np.frombuffer(m, dtype=np.uint8)
        headers = np.empty(n, dtype=MSG_HEADERS_DTYPE)
        headers["io_groups"] = groups
        start = self._n
        self._msgs.resize((start + n,))
        self._headers.resize((start + n,))
        # write_direct: slice assignment would turn equal-length messages into a 2-D array
        self._msgs.write_direct(msgs, dest_sel=np.s_[start : start + n])
        self._headers.write_direct(headers, dest_sel=np.s_[start : start + n])
        self._n = start + n
        if self.swmr:
            # The message bytes live in the file's global heap, which a dataset flush does
            # not write; a whole-file flush makes them readable by a SWMR reader too.
            self._file.flush()

    def flush(self) -> None:
        self._file["meta"].attrs["modified"] = time.time()
        self._file.flush()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._file["meta"].attrs["modified"] = time.time()
        finally:
            self._file.close()
            self._closed = True

    def __enter__(self) -> RawWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawFile(H5Reader):
    """An open raw PACMAN message file for reading."""

    def _validate(self) -> None:
        f = self._file
        if "meta" not in f or "msgs" not in f or "msg_headers" not in f:
            raise FormatError(
                f"{self.path}: not a raw PACMAN message file (needs 'meta', 'msgs' and "
                "'msg_headers')"
            )
        version = _text(f["meta"].attrs.get("version", ""))
        if version.split(".")[0] != RAW_VERSION.split(".")[0]:
            raise FormatError(f"{self.path}: raw file version {version!r}, this reads 0.x")
        msgs, headers = f["msgs"], f["msg_headers"]
        if h5py.check_vlen_dtype(msgs.dtype) != np.dtype("u1"):
            raise FormatError(f"{self.path}: 'msgs' is {msgs.dtype}, not variable-length uint8")
        if headers.dtype.names is None or "io_groups" not in headers.dtype.names:
            raise FormatError(f"{self.path}: 'msg_headers' has no 'io_groups' field")
        if msgs.shape[0] != headers.shape[0]:
            raise FormatError(
                f"{self.path}: {msgs.shape[0]} messages but {headers.shape[0]} headers"
            )
        self.version = version

    @property
    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self._file["meta"].attrs.items():
            out[k] = _text(v) if isinstance(v, (bytes, str)) else (
                v.item() if isinstance(v, np.generic) else v
            )
        return out

    @property
    def n_messages(self) -> int:
        return int(min(self._file["msgs"].shape[0], self._file["msg_headers"].shape[0]))

    def refresh(self) -> None:
        self._file["msgs"].refresh()
        self._file["msg_headers"].refresh()

    def read(self, start: int = 0, stop: int | None = None) -> tuple[list[bytes], np.ndarray]:
        """Messages ``start:stop`` as bytes, and their io_groups (uint8 array)."""
        n = self.n_messages
        stop = n if stop is None else min(stop, n)
        start = max(0, start)
        if stop <= start:
            return [], np.empty(0, dtype=np.uint8)
        try:
            arrays = self._file["msgs"][start:stop]
            groups = self._file["msg_headers"].fields("io_groups")[start:stop]
        except (OSError, RuntimeError, ValueError) as exc:
            raise FormatError(
                f"{self.path}: cannot read messages {start}:{stop}; the file is truncated or "
                f"corrupt ({exc})"
            ) from exc
        return [a.tobytes() for a in arrays], np.asarray(groups, dtype=np.uint8)

    def iter_chunks(self, chunk_messages: int = 4096) -> Iterator[tuple[list[bytes], np.ndarray]]:
        if chunk_messages < 1:
            raise ValueError("chunk_messages must be >= 1")
        n = self.n_messages
        for start in range(0, n, chunk_messages):
            yield self.read(start, start + chunk_messages)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def open_raw(path: str | Path, *, swmr: bool = False) -> RawFile:
    """Open a raw PACMAN message file; FormatError if the file is not one."""
    return RawFile(path, swmr=swmr)


def is_raw_file(path: str | Path) -> bool:
    """True if ``path`` looks like a raw PACMAN message file (v0.x)."""
    try:
        with open_h5_readonly(path) as f:
            return "meta" in f and "msgs" in f and "msg_headers" in f
    except (OSError, FormatError):
        return False


def iter_chunks(
    path: str | Path, chunk_messages: int = 4096
) -> Iterator[tuple[list[bytes], np.ndarray]]:
    """A raw file's messages in lists of at most ``chunk_messages``, with their io_groups."""
    with RawFile(path) as f:
        yield from f.iter_chunks(chunk_messages)


def write_raw(
    path: str | Path,
    messages: Sequence[bytes],
    io_groups: int | Sequence[int] | np.ndarray,
    *,
    overwrite: bool = False,
) -> None:
    """Write a whole raw file in one call (tests, demos, small captures)."""
    with RawWriter(path, overwrite=overwrite, swmr=False) as w:
        w.append(messages, io_groups)
