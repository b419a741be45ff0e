"""Bring a LArPix+HDF5 part back to a readable state after its writer was killed.

A file written in SWMR mode carries "open for write" flags in its superblock (version 2 or
3). If the writer dies, the flags stay set and every ordinary reader (the field's reference
reader included) refuses the file until they are cleared, which is what the HDF5 tool
``h5clear -s`` does. We cannot count on that tool being installed, so this module clears
the flags itself: one byte and the superblock's Jenkins lookup3 checksum.

After clearing, :func:`truncate_to_commit` cuts the datasets back to the last point the
storage recorded as committed, so frames that are sent again after a restart are written
exactly once. The part is then as complete as it will ever be, so it gets what a clean close
gives (``clean_close = 1`` and the ``packets_sha256`` of the rows it keeps) and a
``recovered`` time that says it was repaired.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import h5py
import numpy as np

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import CHECKSUM_ATTR

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` on bytes: the checksum of HDF5 metadata."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _M
    i = 0
    while length > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M  # noqa: E702
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M  # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M  # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M  # noqa: E702
        length -= 12
        i += 12
    if length == 0:
        return c
    tail = data[i:] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M  # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M  # noqa: E702
    return c


def clear_write_flags(path: str | Path) -> bool:
    """Clear the superblock's file-consistency flags; True if they were set.

    Only superblock versions 2 and 3 (what ``libver='latest'`` writes) carry the flags in a
    checksummed superblock; older versions are left alone.
    """
    path = Path(path)
    with open(path, "r+b") as f:
        head = f.read(64)
        if head[:8] != SIGNATURE:
            raise FormatError(f"{path}: no HDF5 superblock at the start of the file")
        version = head[8]
        if version not in (2, 3):
            return False
        size_offsets = head[9]
        end = 12 + 4 * size_offsets  # base, extension, end-of-file, root header addresses
        stored = int.from_bytes(head[end : end + 4], "little")
        if lookup3(head[:end]) != stored:
            raise FormatError(f"{path}: superblock checksum does not match; not repairing")
        if head[11] == 0:
            return False
        fixed = head[:11] + b"\x00" + head[12:end]
        f.seek(0)
        f.write(fixed + lookup3(fixed).to_bytes(4, "little"))
    return True


def truncate_to_commit(
    path: str | Path, packets: int, messages: int, configs: int
) -> dict[str, int]:
    """Cut ``packets``/``messages``/``configs`` back to the committed lengths.

    Returns how many rows each dataset held beyond the commit (they were not acknowledged,
    so their frames are delivered again) and, as negative numbers, rows missing below it.
    The part is marked ``recovered`` with the time and, being complete now, gets
    ``clean_close = 1`` and the checksum of the rows it keeps.
    """
    clear_write_flags(path)
    cut: dict[str, int] = {}
    digest = None
    with h5py.File(path, "r") as f:  # the rows kept, read before anything is changed
        if "packets" in f:
            digest = _digest(f["packets"], min(packets, int(f["packets"].shape[0])))
    with h5py.File(path, "r+") as f:
        for name, keep in (("packets", packets), ("messages", messages), ("configs", configs)):
            if name not in f:
                continue
            ds = f[name]
            have = int(ds.shape[0])
            cut[name] = have - keep
            if have > keep:
                ds.resize((keep,))
        header = f["_header"]
        header.attrs["recovered"] = time.time()
        if digest is not None:
            # Fixed-length bytes, stored in the header itself: a variable-length string
            # would need a new heap block, and after a kill the file's end address cannot
            # be trusted to place one ("duplicate entry in cache").
            header.attrs[CHECKSUM_ATTR] = np.bytes_(digest.encode("ascii"))
        header.attrs["modified"] = time.time()
        header.attrs["clean_close"] = 1
    return cut


def _digest(ds: h5py.Dataset, stop: int, rows: int = 1 << 20) -> str:
    """SHA-256 of a ``packets`` dataset's first ``stop`` rows' bytes, as a clean close
    computes it."""
    sha = hashlib.sha256()
    for start in range(0, stop, rows):
        sha.update(np.ascontiguousarray(ds[start:min(stop, start + rows)]).data)
    return sha.hexdigest()
