"""What is in a LArPix file: one summary for LArPix+HDF5 v2.4 and raw PACMAN message files.

A physicist handed a file wants to know, before any analysis, whether it holds what they
expect: how many rows of each kind, which io_groups, chips and channels, over what time,
how many parity errors, which messages and chip configurations. The summary is computed
in bounded chunks (a file may be far larger than memory) and returned as a plain dict, so
the command can print it as text or JSON; a raw file is decoded batch by batch and
summarised in the same terms, plus what the decoder had to skip.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import Hdf5File, is_hdf5_file, packets_digest
from larpixdaq.formats.pacman import decode_data_messages
from larpixdaq.formats.rawfile import RawFile, is_raw_file
from larpixdaq.formats.rows import (
    DATA,
    PACKET_TYPE_NAMES,
    SYNC,
    TIMESTAMP,
    TRIGGER,
    configs_hash,
)

FORMAT_HDF5 = "LArPix+HDF5"
FORMAT_RAW = "raw PACMAN messages"


def _chip_key(key: int) -> str:
    return f"{key >> 16}-{(key >> 8) & 0xFF}-{key & 0xFF}"


class _RowStats:
    """Accumulates the summary of ``packets`` rows fed chunk by chunk."""

    def __init__(self) -> None:
        self.by_type = np.zeros(256, dtype=np.int64)
        self.io_groups = np.zeros(0, dtype=np.uint8)
        self.chips = np.zeros(0, dtype=np.uint32)
        self.channels = np.zeros(0, dtype=np.uint64)
        self.parity_errors = 0
        self.unix_min: int | None = None
        self.unix_max: int | None = None
        self.sync_types: dict[int, int] = {}

    def update(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        ptype = rows["packet_type"]
        self.by_type += np.bincount(ptype, minlength=256)
        self.io_groups = np.union1d(self.io_groups, np.unique(rows["io_group"]))
        chip_rows = rows[ptype < 4]
        if len(chip_rows):
            key = (
                chip_rows["io_group"].astype(np.uint32) << 16
                | chip_rows["io_channel"].astype(np.uint32) << 8
                | chip_rows["chip_id"].astype(np.uint32)
            )
            self.chips = np.union1d(self.chips, np.unique(key))
            self.parity_errors += int(np.count_nonzero(chip_rows["valid_parity"] == 0))
            data = chip_rows["packet_type"] == DATA
            chan = key[data].astype(np.uint64) << np.uint64(6) | chip_rows["channel_id"][data]
            self.channels = np.union1d(self.channels, np.unique(chan))
        stamps = rows["timestamp"][ptype == TIMESTAMP]
        if len(stamps):
            lo, hi = int(stamps.min()), int(stamps.max())
            self.unix_min = lo if self.unix_min is None else min(self.unix_min, lo)
            self.unix_max = hi if self.unix_max is None else max(self.unix_max, hi)
        sync = rows["trigger_type"][ptype == SYNC]
        if len(sync):
            kinds, counts = np.unique(sync, return_counts=True)
            for k, n in zip(kinds.tolist(), counts.tolist(), strict=True):
                self.sync_types[k] = self.sync_types.get(k, 0) + n

    def result(self) -> dict[str, Any]:
        n_chip = int(self.by_type[:4].sum())
        span: dict[str, Any] | None = None
        if self.unix_min is not None and self.unix_max is not None:
            span = {
                "start": self.unix_min,
                "end": self.unix_max,
                "seconds": self.unix_max - self.unix_min,
                "start_utc": _utc(self.unix_min),
                "end_utc": _utc(self.unix_max),
            }
        return {
            "rows": int(self.by_type.sum()),
            "rows_by_type": {
                PACKET_TYPE_NAMES.get(t, f"type_{t}"): int(n)
                for t, n in enumerate(self.by_type)
                if n
            },
            "chip_packets": n_chip,
            "io_groups": [int(g) for g in self.io_groups],
            "chips": len(self.chips),
            "chip_keys": [_chip_key(int(k)) for k in self.chips],
            "channels": len(self.channels),
            "time_span": span,
            "sync_rows_by_kind": {
                chr(k) if 32 <= k < 127 else str(k): n for k, n in sorted(self.sync_types.items())
            },
            "triggers": int(self.by_type[TRIGGER]),
            "parity_errors": self.parity_errors,
            "parity_error_fraction": self.parity_errors / n_chip if n_chip else 0.0,
        }


def _utc(seconds: int) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _inspect_hdf5(path: Path, chunk_rows: int, verify: bool) -> dict[str, Any]:
    stats = _RowStats()
    with Hdf5File(path) as f:
        info = f.info()
        for rows in f.iter_packets(chunk_rows):
            stats.update(rows)
        messages = f.messages()
        configs = f.configs()
        asic = f._file["configs"].attrs.get("asic_version") if "configs" in f._file else None
    out: dict[str, Any] = {
        "path": str(path),
        "format": FORMAT_HDF5,
        "version": info.version,
        "size_bytes": path.stat().st_size,
        "header": info.header,
        "run": info.run,
        "clean_close": info.clean_close,
        "checksum": info.checksum,
        "chunk_rows": info.chunk_rows,
        "compression": info.compression,
    }
    out.update(stats.result())
    out["messages"] = {
        "count": len(messages),
        "texts": [
            {"index": int(m["index"]), "timestamp": int(m["timestamp"]),
             "message": m["message"].decode("utf-8", "replace")}
            for m in messages[:20]
        ],
    }
    # The configuration the run started with: as recorded, else (files written before the
    # hash was recorded, or by another writer) the same hash computed from the table.
    out["config_hash"] = out["run"].get("config_hash") or configs_hash(configs)
    out["config_hash_from"] = ("run metadata" if out["run"].get("config_hash")
                               else "configs table" if out["config_hash"] else None)
    keys = sorted({f"{c['io_group']}-{c['io_channel']}-{c['chip_id']}" for c in configs})
    out["configs"] = {
        "count": len(configs),
        "chips": keys,
        "asic_version": asic.decode() if isinstance(asic, bytes) else asic,
    }
    if verify:
        stored = info.checksum
        out["checksum_ok"] = None if stored is None else packets_digest(path) == stored
    return out


def _inspect_raw(path: Path, chunk_messages: int) -> dict[str, Any]:
    stats = _RowStats()
    errors: dict[str, int] = {}
    n_msgs = 0
    n_bytes = 0
    kinds: dict[str, int] = {}
    per_group = np.zeros(256, dtype=np.int64)
    with RawFile(path) as f:
        meta = f.meta
        for messages, groups in f.iter_chunks(chunk_messages):
            n_msgs += len(messages)
            n_bytes += sum(len(m) for m in messages)
            for m in messages:  # one per message (not per packet): its type byte
                k = chr(m[0]) if m and 32 <= m[0] < 127 else ("empty" if not m else f"0x{m[0]:02x}")
                kinds[k] = kinds.get(k, 0) + 1
            per_group += np.bincount(groups, minlength=256)
            result = decode_data_messages(messages, groups)
            stats.update(result.rows)
            for kind, n in result.errors.items():
                errors[kind] = errors.get(kind, 0) + n
    out: dict[str, Any] = {
        "path": str(path),
        "format": FORMAT_RAW,
        "version": meta.get("version"),
        "size_bytes": path.stat().st_size,
        "header": meta,
        "raw": {
            "messages": n_msgs,
            "message_bytes": n_bytes,
            "messages_by_type": dict(sorted(kinds.items())),
            "messages_by_io_group": {str(g): int(n) for g, n in enumerate(per_group) if n},
            "decode_errors": errors,
        },
    }
    out.update(stats.result())
    return out


def inspect_file(
    path: str | Path,
    *,
    chunk_rows: int = 1 << 20,
    chunk_messages: int = 2048,
    verify: bool = False,
) -> dict[str, Any]:
    """Summarise a LArPix+HDF5 or raw PACMAN message file (format detected from content).

    ``verify`` recomputes the packets checksum of a v2.4 file (reads every row twice).
    Raises FileNotFoundError, or FormatError for a file that is neither format or is
    truncated or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    if is_raw_file(path):
        return _inspect_raw(path, chunk_messages)
    if is_hdf5_file(path):
        return _inspect_hdf5(path, chunk_rows, verify)
    # Let the readers say precisely what is wrong (not HDF5 at all, or which part is missing).
    with Hdf5File(path):
        pass
    raise FormatError(f"{path}: neither a LArPix+HDF5 file nor a raw PACMAN message file")


#: Header and run attributes that hold Unix times (seconds), shown as ISO 8601 UTC.
_TIME_KEYS = ("created", "modified", "start_time", "end_time", "begin_time")


def iso_utc(seconds: Any) -> str:
    """A Unix time as ISO 8601 UTC (``2026-12-01T19:54:41.971Z``); other values as they are."""
    if isinstance(seconds, (bool, str)) or not isinstance(seconds, (int, float, np.number)):
        return str(seconds)
    try:
        when = dt.datetime.fromtimestamp(float(seconds), dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{seconds} (not a time)"
    whole = float(seconds).is_integer()
    return when.isoformat(timespec="seconds" if whole else "milliseconds").replace("+00:00", "Z")


def _kv(key: str, value: Any) -> str:
    """One ``key value`` line (a space between them, however long the key)."""
    name = key.rsplit(".", 1)[-1]
    shown = iso_utc(value) if name in _TIME_KEYS else value
    return f"  {key:<21} {shown}"


def _fmt_count(n: int) -> str:
    return f"{n:,}"


def _list(items: list[Any], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "") or "none"


def render_text(summary: dict[str, Any]) -> str:
    """The summary as a short human-readable report."""
    s = summary
    lines = [f"{s['path']}", f"  format        {s['format']} v{s.get('version')}"]
    lines.append(f"  size          {_fmt_count(s['size_bytes'])} bytes")
    if "raw" in s:
        raw = s["raw"]
        lines.append(
            f"  messages      {_fmt_count(raw['messages'])} "
            f"({_fmt_count(raw['message_bytes'])} bytes; by type "
            f"{', '.join(f'{k}: {v}' for k, v in raw['messages_by_type'].items()) or 'none'})"
        )
        by_group = ", ".join(f"{k}: {v}" for k, v in raw["messages_by_io_group"].items())
        lines.append(f"  by io_group   {by_group or 'none'}")
        errs = raw["decode_errors"]
        lines.append(
            "  decode errors "
            + (", ".join(f"{k}: {v}" for k, v in errs.items()) if errs else "none")
        )
    lines.append(f"  rows          {_fmt_count(s['rows'])}")
    for name, n in s["rows_by_type"].items():
        lines.append(f"    {name:<14}{_fmt_count(n):>14}")
    lines.append(f"  io_groups     {_list(s['io_groups'])}")
    lines.append(f"  chips         {s['chips']} ({_list(s['chip_keys'], 8)})")
    lines.append(f"  channels      {s['channels']} with data")
    span = s["time_span"]
    if span:
        lines.append(
            f"  time span     {span['start_utc']} .. {span['end_utc']} ({span['seconds']} s)"
        )
    else:
        lines.append("  time span     unknown (no timestamp rows)")
    if s["sync_rows_by_kind"]:
        lines.append(
            "  syncs         "
            + ", ".join(f"{k}: {v}" for k, v in s["sync_rows_by_kind"].items())
        )
    lines.append(f"  triggers      {s['triggers']}")
    lines.append(
        f"  parity errors {_fmt_count(s['parity_errors'])} "
        f"({100 * s['parity_error_fraction']:.3f}% of chip packets)"
    )
    if s["format"] == FORMAT_HDF5:
        msgs = s["messages"]
        lines.append(f"  messages      {msgs['count']}")
        for m in msgs["texts"][:5]:
            lines.append(f"    [{m['index']}] {iso_utc(m['timestamp'])} {m['message']}")
        cfg = s["configs"]
        lines.append(
            f"  configs       {cfg['count']} (chips {_list(cfg['chips'], 8)}; "
            f"asic_version {cfg['asic_version']})"
        )
        clean = {True: "yes", False: "NO", None: "not recorded"}[s["clean_close"]]
        lines.append(f"  clean close   {clean}")
        if s.get("checksum"):
            check = s.get("checksum_ok")
            verdict = "" if check is None else (" (verified)" if check else " (MISMATCH)")
            lines.append(f"  sha256        {s['checksum']}{verdict}")
        lines.append(f"  chunks        {s['chunk_rows']} rows, compression {s['compression']}")
        for key, value in s["header"].items():
            if key not in ("packets_sha256", "clean_close", "checksum_algorithm"):
                lines.append(_kv(f"header.{key}", value))
        computed = (f"{s['config_hash']} (from the configs table)"
                    if s.get("config_hash_from") == "configs table" else None)
        for key, value in s["run"].items():
            lines.append(_kv(f"run.{key}", computed if key == "config_hash" and computed
                             else value))
        if computed and "config_hash" not in s["run"]:
            lines.append(_kv("run.config_hash", computed))
    else:
        for key, value in s["header"].items():
            lines.append(_kv(f"meta.{key}", value))
    return "\n".join(lines)


def render_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=False, default=str)
