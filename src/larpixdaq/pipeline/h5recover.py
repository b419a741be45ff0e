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

A SIGKILL also leaves the superblock's end-of-file address (EOA) stale: a SWMR writer
flushes a dataset's chunks and chunk index as it appends, but the superblock, which holds
the EOA, only at a full file flush (a commit). Blocks allocated after the last commit lie
beyond that address, and the metadata already on disk points at them; the library refuses
to read or write there ("addr overflow") and would place new blocks on top of them. So
:func:`repair_part` first sets the EOA to the file's real size, as ``h5clear --increment``
does, then walks every dataset's chunk index. A part whose metadata points past the end of
the file (the writer died before those blocks reached the disk) or cannot be read is not
touched in place: its committed rows are copied into a fresh part under the same name, and
the damaged original is kept beside it, byte for byte as the writer left it and read-only,
as ``<part>.damaged`` (or ``.damaged-2``, ...).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import CHECKSUM_ATTR, Hdf5Writer
from larpixdaq.formats.rows import CONFIGS_DTYPE, MESSAGES_DTYPE, PACKETS_DTYPE

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


def _patch_superblock(path: Path, *, clear_flags: bool, eoa_to_eof: bool) -> tuple[bool, int]:
    """Rewrite the superblock's flags byte and/or end-of-file address, and its checksum.

    Returns (flags were set, bytes the EOA grew by). Only superblock versions 2 and 3 (what
    ``libver='latest'`` writes) carry the flags in a checksummed superblock; older versions
    are left alone.
    """
    with open(path, "r+b") as f:
        head = f.read(64)
        if head[:8] != SIGNATURE:
            raise FormatError(f"{path}: no HDF5 superblock at the start of the file")
        version = head[8]
        if version not in (2, 3):
            return False, 0
        so = head[9]
        end = 12 + 4 * so  # base, extension, end-of-file, root header addresses
        stored = int.from_bytes(head[end : end + 4], "little")
        if lookup3(head[:end]) != stored:
            raise FormatError(f"{path}: superblock checksum does not match; not repairing")
        flags_set = head[11] != 0
        fixed = bytearray(head[:end])
        if clear_flags:
            fixed[11] = 0
        grown = 0
        if eoa_to_eof:
            eoa_at = 12 + 2 * so
            eoa = int.from_bytes(fixed[eoa_at : eoa_at + so], "little")
            size = os.fstat(f.fileno()).st_size
            if eoa < size:
                fixed[eoa_at : eoa_at + so] = size.to_bytes(so, "little")
                grown = size - eoa
        if bytes(fixed) != head[:end]:
            f.seek(0)
            f.write(bytes(fixed) + lookup3(bytes(fixed)).to_bytes(4, "little"))
    return flags_set and clear_flags, grown


def clear_write_flags(path: str | Path) -> bool:
    """Clear the superblock's file-consistency flags; True if they were set."""
    return _patch_superblock(Path(path), clear_flags=True, eoa_to_eof=False)[0]


def extend_eoa_to_eof(path: str | Path) -> int:
    """Set the superblock's end-of-file address to the file's size if it is below it (what a
    killed SWMR writer leaves); returns by how many bytes it grew."""
    return _patch_superblock(Path(path), clear_flags=False, eoa_to_eof=True)[1]


def untrusted_reason(path: str | Path) -> str | None:
    """Why the part's metadata cannot be cut in place, or None if it can.

    Every dataset is opened and its whole chunk index walked (no row is read): the in-place
    cut touches the index entries beyond the commit, so each must be readable and each
    chunk must lie inside the file.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        with h5py.File(path, "r") as f:
            for group in ("_header", "run"):
                if group in f:
                    dict(f[group].attrs.items())
            for name in f:
                ds = f[name]
                if not isinstance(ds, h5py.Dataset):
                    continue
                dict(ds.attrs.items())
                if ds.chunks is None:
                    continue
                beyond: list[int] = []

                def visit(info: object, beyond: list[int] = beyond) -> None:
                    if info.byte_offset + info.size > size:  # type: ignore[attr-defined]
                        beyond.append(info.byte_offset)  # type: ignore[attr-defined]

                ds.id.chunk_iter(visit)
                if beyond:
                    return (f"'{name}' has {len(beyond)} chunk(s) past the end of the file "
                            f"(first at byte {beyond[0]}, file {size} bytes)")
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        return f"its metadata cannot be read ({exc})"
    return None


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


_DATASETS = (("packets", PACKETS_DTYPE), ("messages", MESSAGES_DTYPE), ("configs", CONFIGS_DTYPE))


@dataclass
class Repair:
    """What :func:`repair_part` did to a part."""

    cut: dict[str, int] = field(default_factory=dict)
    """Rows beyond the commit cut per dataset; negative: committed rows that could not be
    read back (lost)."""
    rebuilt: bool = False
    aside: Path | None = None
    """Where the damaged original was kept, when the part was rebuilt."""
    reason: str = ""
    eoa_grown: int = 0


def repair_part(path: str | Path, packets: int, messages: int, configs: int) -> Repair:
    """Make a killed writer's part whole as of its last commit; see the module docstring.

    The part is cut in place when its metadata can be trusted, and otherwise (or if the
    in-place cut fails) rebuilt from its committed rows. Either way ``path`` is, at every
    moment, a file that holds every committed row that was readable: the rebuilt copy
    replaces it in one rename, after the original got its second name.
    """
    path = Path(path)
    with open(path, "rb") as f:
        superblock = f.read(64)  # as the writer left it, for a damaged original kept aside
    grown = 0
    try:
        clear_write_flags(path)
        grown = extend_eoa_to_eof(path)
        reason = untrusted_reason(path)
    except FormatError as exc:  # a superblock that is not what the writer left
        reason = str(exc)
    if reason is None:
        try:
            return Repair(cut=truncate_to_commit(path, packets, messages, configs),
                          eoa_grown=grown)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            reason = f"cutting it in place failed ({exc})"
    aside = _aside_path(path)
    cut = _rebuild(path, packets, messages, configs)
    with open(aside, "r+b") as f:  # the original is kept exactly as it was found
        f.write(superblock)
    return Repair(cut=cut, rebuilt=True, aside=aside, reason=reason, eoa_grown=grown)


def _aside_path(path: Path) -> Path:
    """Keep the damaged original under a second name (a hard link: the part's own name
    stays taken until the rebuilt copy replaces it)."""
    n = 1
    while True:
        aside = path.with_name(path.name + (".damaged" if n == 1 else f".damaged-{n}"))
        try:
            os.link(path, aside)
        except FileExistsError:
            if aside.stat().st_ino == path.stat().st_ino:  # kept by a repair cut short
                return aside
            n += 1
            continue
        return aside


def _rebuild(path: Path, packets: int, messages: int, configs: int) -> dict[str, int]:
    """Copy the committed rows (as many as can be read) into a fresh part, then put it in
    the part's place. Returns the cut, as :func:`truncate_to_commit` does."""
    keep = {"packets": packets, "messages": messages, "configs": configs}
    rows = {name: np.zeros(0, dtype) for name, dtype in _DATASETS}
    have: dict[str, int] = dict.fromkeys(keep, 0)
    header: dict[str, object] = {}
    run: dict[str, object] = {}
    chunk_rows = compression = None
    try:
        with h5py.File(path, "r") as f:
            for name, _ in _DATASETS:
                if name in f:
                    have[name] = int(f[name].shape[0])
                    rows[name] = _read_rows(f[name], min(keep[name], have[name]))
            if "packets" in f:
                chunk_rows = f["packets"].chunks[0] if f["packets"].chunks else None
                compression = f["packets"].compression
            header = _attrs(f, "_header")
            run = _attrs(f, "run")
    except (OSError, RuntimeError, ValueError, KeyError):
        pass  # nothing readable: every committed row is counted lost below
    tmp = path.with_name(path.name + ".rebuilding")
    tmp.unlink(missing_ok=True)  # a rebuild cut short; the original is still in place
    writer = Hdf5Writer(tmp, chunk_rows=chunk_rows or 65536, compression=compression,
                        run_metadata=run)
    try:
        writer.append(rows["packets"])
        writer.add_message_rows(rows["messages"])
        if len(rows["configs"]):
            writer.add_configs(rows["configs"])
        writer.set_header({**{k: v for k, v in header.items() if k == "created"},
                           "recovered": time.time()})
        writer.close(clean=True)
    except BaseException:
        writer.close(clean=False)
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return {name: (have[name] - keep[name]) if len(rows[name]) == keep[name]
            else len(rows[name]) - keep[name] for name, _ in _DATASETS}


def _read_rows(ds: h5py.Dataset, stop: int) -> np.ndarray:
    """The first ``stop`` rows, or as many leading chunks of them as can be read."""
    step = ds.chunks[0] if ds.chunks else max(stop, 1)
    parts = []
    for start in range(0, stop, step):
        try:
            parts.append(ds[start:min(stop, start + step)])
        except (OSError, RuntimeError, ValueError):
            break
    return np.concatenate(parts) if parts else np.zeros(0, ds.dtype)


def _attrs(f: h5py.File, group: str) -> dict[str, object]:
    out: dict[str, object] = {}
    if group in f:
        for key in f[group].attrs:
            try:
                value = f[group].attrs[key]
            except (OSError, RuntimeError, ValueError, TypeError):
                continue
            if isinstance(value, np.ndarray):
                value = value.tolist()
            if isinstance(value, list):
                value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                         for v in value]
            out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return out
