"""Raw PACMAN message files -> LArPix+HDF5 v2.4, in bounded batches at array speed.

A raw file holds the messages exactly as the boards sent them; analysis reads the v2.4
``packets`` table. Conversion reads ``chunk_messages`` messages at a time, decodes the
whole batch with one vectorised call and appends the rows with one write, so memory stays
bounded by the batch and a bad message costs a counter, not the run.

The output is written to ``OUT.part`` and renamed only when complete, so a crash or a
corrupt input never leaves a half-written file under the name analysis would open.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from larpixdaq.formats.hdf5file import DEFAULT_CHUNK_ROWS, Hdf5Writer
from larpixdaq.formats.pacman import decode_data_messages
from larpixdaq.formats.rawfile import open_raw
from larpixdaq.formats.rows import PACKET_TYPE_NAMES
from larpixdaq.version import __version__

DEFAULT_CHUNK_MESSAGES = 512
ProgressCallback = Callable[[int, int], None]
"""Called after each batch with (messages done, messages in the file)."""


@dataclass
class ConvertSummary:
    """What a conversion did: counts, decode errors by kind, and how fast."""

    input: str
    output: str
    n_messages: int = 0
    n_rows: int = 0
    n_chip_packets: int = 0
    rows_by_type: dict[str, int] = field(default_factory=dict)
    parity_errors: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    input_bytes: int = 0
    output_bytes: int = 0

    @property
    def n_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def packets_per_s(self) -> float:
        return self.n_chip_packets / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["n_errors"] = self.n_errors
        out["packets_per_s"] = self.packets_per_s
        return out


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".part")


def convert(
    raw_path: str | Path,
    out_path: str | Path,
    *,
    chunk_messages: int = DEFAULT_CHUNK_MESSAGES,
    compression: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> ConvertSummary:
    """Convert a raw PACMAN message file into a LArPix+HDF5 v2.4 file.

    Raises FileNotFoundError (no input), FormatError (input is not a raw message file, or
    is truncated/corrupt), FileExistsError (output exists and ``overwrite`` is false) and
    ValueError (bad arguments, or output = input). Malformed messages inside a good file do
    not raise: they are skipped and counted in ``errors``.
    """
    raw_path, out_path = Path(raw_path), Path(out_path)
    if chunk_messages < 1:
        raise ValueError(f"chunk_messages must be >= 1, got {chunk_messages}")
    if out_path.exists() and raw_path.exists() and out_path.resolve() == raw_path.resolve():
        raise ValueError(f"output {out_path} is the input file")
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists (use overwrite/--force to replace it)")
    summary = ConvertSummary(input=str(raw_path), output=str(out_path))
    by_type = np.zeros(256, dtype=np.int64)
    t0 = time.perf_counter()
    with open_raw(raw_path) as raw:
        total = raw.n_messages
        meta = raw.meta
        partial = _partial_path(out_path)
        writer = Hdf5Writer(
            partial,
            chunk_rows=chunk_rows,
            compression=compression,
            overwrite=True,
            run_metadata={
                "source_file": str(raw_path),
                "source_format": f"raw PACMAN messages v{meta.get('version', '?')}",
                "source_created": meta.get("created", 0.0),
                "converter": f"larpix-daq {__version__}",
            },
        )
        try:
            done = 0
            for messages, io_groups in raw.iter_chunks(chunk_messages):
                result = decode_data_messages(messages, io_groups)
                rows = result.rows
                writer.append(rows)
                ptype = rows["packet_type"]
                by_type += np.bincount(ptype, minlength=256)
                chip = ptype < 4
                summary.parity_errors += int(np.count_nonzero(rows["valid_parity"][chip] == 0))
                for kind, n in result.errors.items():
                    summary.errors[kind] = summary.errors.get(kind, 0) + n
                done += len(messages)
                if progress is not None:
                    progress(done, total)
            summary.n_messages = done
            writer.set_run_metadata(
                {"decode_errors": sum(summary.errors.values()), "source_messages": done}
            )
            writer.close(clean=True)
        except BaseException:
            writer.close(clean=False)
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, out_path)
    summary.elapsed_s = time.perf_counter() - t0
    summary.rows_by_type = {
        PACKET_TYPE_NAMES.get(t, f"type_{t}"): int(n) for t, n in enumerate(by_type) if n
    }
    summary.n_rows = int(by_type.sum())
    summary.n_chip_packets = int(by_type[:4].sum())
    summary.input_bytes = raw_path.stat().st_size
    summary.output_bytes = out_path.stat().st_size
    return summary
