"""Routine results kept on disk: a JSON summary and the arrays beside it, one pair per run.

A calibration's result is mostly arrays (a mean per channel of every chip: 6,400 numbers
for one tile), which nobody wants on a console and everybody wants in numpy afterwards.
:func:`split_result` turns a routine's JSON-able result into a short *summary* (the
scalars and small lists as they are, every large numeric list replaced by a reference
``{"array": NAME, "shape": [...], "dtype": ...}``) and the *arrays* by name. A mapping of
many entries of the same layout (``{"1-1-11": {"mean": [...], "std": [...]}, ...}``, one per
chip) becomes one stacked array per field plus ``NAME.keys``, so a result of 100 chips is
three arrays of shape (100, 64), not 300.

:class:`ResultStore` writes ``<UTC time>-<routine>.json`` (the summary, the parameters, the
outcome) and ``.npz`` (the arrays) into a directory, never over an existing file, and lists
them back. The split is pure; only the store touches files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Numeric lists with at least this many numbers go to the arrays; shorter ones stay inline.
ARRAY_MIN_SIZE = 16
#: Summary lines a listing carries per result (a table's "summary" column).
BRIEF_LINES = 3
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
SUMMARY_SUFFIX, ARRAYS_SUFFIX = ".json", ".npz"


# ---- the split (pure) -------------------------------------------------------------------------
def _numeric_array(value: Any) -> np.ndarray | None:
    """``value`` as a rectangular numeric array (None -> NaN), or None if it is not one."""
    if not isinstance(value, list) or not value:
        return None
    try:
        with np.errstate(invalid="ignore"):
            arr = np.array(value, dtype=object)
    except ValueError:  # ragged
        return None
    if arr.dtype != object or arr.size == 0:
        return None
    flat = arr.ravel()
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for v in flat):
        return None
    # Only what an array gives back unchanged becomes one: integers beyond int64 (or, beside
    # floats, beyond float64's exact 2**53) stay in the summary as JSON numbers.
    ints = [v for v in flat if isinstance(v, int)]
    if any(v is None or isinstance(v, float) for v in flat):
        if any(abs(v) > 2**53 for v in ints):
            return None
        return np.array([np.nan if v is None else v for v in flat],
                        dtype=np.float64).reshape(arr.shape)
    if any(not INT64_MIN <= v <= INT64_MAX for v in ints):
        return None
    return np.array(flat.tolist(), dtype=np.int64).reshape(arr.shape)


def _ref(name: str, arr: np.ndarray) -> dict[str, Any]:
    return {"array": name, "shape": list(arr.shape), "dtype": str(arr.dtype)}


def _stack(name: str, value: Mapping[str, Any], arrays: dict[str, np.ndarray]
           ) -> dict[str, Any] | None:
    """Entries of one layout (all arrays of one shape, or all records of the same fields,
    each an array of one shape per field) stacked along a first axis; None otherwise."""
    if len(value) < 2:
        return None
    entries = list(value.values())
    if all(isinstance(e, Mapping) for e in entries):
        fields = list(entries[0])
        if not fields or any(list(e) != fields for e in entries):
            return None
        columns = {f: [_numeric_array(e[f]) for e in entries] for f in fields}
    else:
        columns = {"": [_numeric_array(e) for e in entries]}
    for parts in columns.values():
        if any(p is None for p in parts) or len({p.shape for p in parts}) != 1:
            return None
    out: dict[str, Any] = {}
    keys = np.array([str(k) for k in value])
    arrays[f"{name}.keys"] = keys
    out["keys"] = _ref(f"{name}.keys", keys)
    for field, parts in columns.items():
        kind = np.float64 if any(p.dtype.kind == "f" for p in parts) else np.int64
        stacked = np.stack([p.astype(kind) for p in parts])
        full = f"{name}.{field}" if field else name
        arrays[full] = stacked
        out[field or "values"] = _ref(full, stacked)
    return out


def _split(value: Any, name: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, Mapping):
        stacked = _stack(name, value, arrays)
        if stacked is not None and sum(arrays[r["array"]].size for r in stacked.values()
                                       if r["array"] != f"{name}.keys") >= ARRAY_MIN_SIZE:
            return stacked
        for r in (stacked or {}).values():  # too small to be worth an array: undo
            arrays.pop(r["array"], None)
        return {k: _split(v, f"{name}.{k}" if name else str(k), arrays)
                for k, v in value.items()}
    arr = _numeric_array(value)
    if arr is not None and arr.size >= ARRAY_MIN_SIZE:
        arrays[name or "result"] = arr
        return _ref(name or "result", arr)
    if isinstance(value, list) and arr is None:
        return [_split(v, f"{name}.{i}" if name else str(i), arrays) for i, v in enumerate(value)]
    return value


def split_result(result: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """A routine's result as (summary, arrays by name); see the module docstring."""
    arrays: dict[str, np.ndarray] = {}
    return _split(result, "", arrays), arrays


def join_result(summary: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The inverse of :func:`split_result`, with NaN for the JSON nulls of float arrays
    (what a reader of the files gets back)."""
    if isinstance(summary, Mapping):
        if set(summary) == {"array", "shape", "dtype"}:
            return arrays[summary["array"]].tolist()
        if "keys" in summary and isinstance(summary["keys"], Mapping) \
                and summary["keys"].get("array", "").endswith(".keys"):
            keys = arrays[summary["keys"]["array"]].tolist()
            fields = {f: arrays[r["array"]] for f, r in summary.items() if f != "keys"}
            if list(fields) == ["values"]:
                return {k: fields["values"][i].tolist() for i, k in enumerate(keys)}
            return {k: {f: a[i].tolist() for f, a in fields.items()} for i, k in enumerate(keys)}
        return {k: join_result(v, arrays) for k, v in summary.items()}
    if isinstance(summary, list):
        return [join_result(v, arrays) for v in summary]
    return summary


def summary_lines(summary: Any, prefix: str = "", limit: int = 40) -> list[str]:
    """The summary as ``name value`` lines, arrays as their shape: what a console shows."""
    lines: list[str] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Mapping) and set(value) == {"array", "shape", "dtype"}:
            shape = " x ".join(str(n) for n in value["shape"])
            lines.append(f"{name}  [{shape} {value['dtype']} array]")
        elif isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        else:
            text = json.dumps(value)
            lines.append(f"{name}  {text if len(text) <= 100 else text[:97] + '...'}")

    walk(summary, prefix)
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more; see the files)"]
    return lines


# ---- the store (files) ------------------------------------------------------------------------
def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")[:-4] + "Z"


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


_NAME = re.compile(r"^(?P<stamp>\d{8}T\d{6}\.\d{3}Z)-(?:(?P<n>\d+)-)?")


def _order(path: Path) -> tuple[str, int, str]:
    """Time, then the counter of a second result in the same millisecond, then the name."""
    m = _NAME.match(path.name)
    if m is None:
        return ("", 0, path.name)
    return (m["stamp"], int(m["n"] or 1), path.name)


class ResultStore:
    """Routine results in one directory (see the module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _claim(self, stem: str) -> Path:
        """A new summary file, created exclusively (so never overwriting another)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp, _, routine = stem.partition("-")
        for n in range(1, 10_000):
            name = stem if n == 1 else f"{stamp}-{n}-{routine}"
            path = self.directory / f"{name}{SUMMARY_SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.close(fd)
            if (self.directory / f"{name}{ARRAYS_SUFFIX}").exists():
                path.unlink()
                continue
            return path
        raise FileExistsError(f"no free result file name for {stem} in {self.directory}")

    def save(self, outcome: Mapping[str, Any], *, finished: float,
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Keep one routine's outcome (``RoutineResult.to_dict()``); returns the record
        written (what :meth:`list` gives back), with the files' paths."""
        summary, arrays = split_result(outcome.get("result"))
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(outcome["name"]))
        path = self._claim(f"{_stamp(finished)}-{safe}")
        npz = path.with_suffix(ARRAYS_SUFFIX)
        record = {
            "routine": outcome["name"], "status": outcome["status"],
            "message": outcome["message"], "params": outcome.get("params", {}),
            "seconds": outcome.get("seconds"), "finished": _iso(finished),
            "started": _iso(finished - float(outcome.get("seconds") or 0.0)),
            **dict(extra or {}), "summary": summary,
            "arrays": {k: {"shape": list(a.shape), "dtype": str(a.dtype)}
                       for k, a in arrays.items()},
            "summary_file": str(path), "arrays_file": str(npz) if arrays else None,
        }
        if outcome.get("traceback"):
            record["traceback"] = outcome["traceback"]
        if arrays:
            with open(npz, "xb") as f:
                np.savez_compressed(f, **arrays)
        path.write_text(json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n",
                        encoding="utf-8")
        return record

    def list(self, limit: int | None = None, routine: str | None = None
             ) -> list[dict[str, Any]]:
        """Kept results, newest first, without their summaries (what a table shows) but
        with their first :data:`BRIEF_LINES` summary lines as ``brief``; a file that cannot
        be read is listed with the reason rather than hidden."""
        if not self.directory.is_dir():
            return []
        out: list[dict[str, Any]] = []
        for path in sorted(self.directory.glob(f"*{SUMMARY_SUFFIX}"), key=_order, reverse=True):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                out.append({"summary_file": str(path), "status": "unreadable",
                            "message": f"{type(exc).__name__}: {exc}"})
                continue
            if routine and record.get("routine") != routine:
                continue
            listed = {k: v for k, v in record.items() if k not in ("summary", "traceback")}
            listed["brief"] = summary_lines(record.get("summary"), limit=BRIEF_LINES)
            out.append(listed)
            if limit and len(out) >= limit:
                break
        return out
