"""LArPix+HDF5 v2.4 write throughput: our chunked writer vs larpix-control's ``to_file``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bench.table import Row, best_time, of_memcpy
from larpixdaq.demo import synthetic_messages
from larpixdaq.formats.hdf5file import Hdf5Writer, read_packets
from larpixdaq.formats.pacman import decode_data_messages
from larpixdaq.formats.rows import PACKETS_DTYPE

TITLE = "write LArPix+HDF5 v2.4 packets"


def _rows(n: int) -> np.ndarray:
    msgs, groups = synthetic_messages(n, words_per_message=1000, seed=11)
    return decode_data_messages(msgs, groups).rows


def _write(path: Path, rows: np.ndarray, append_rows: int, **kwargs: object) -> None:
    with Hdf5Writer(path, overwrite=True, **kwargs) as w:
        for s in range(0, len(rows), append_rows):
            w.append(rows[s : s + append_rows])


def _reference_rate(tmp: Path, n: int) -> float | None:
    try:
        from larpix.format.hdf5format import to_file
        from larpix.format.pacman_msg_format import parse
    except ImportError:
        return None
    msgs, groups = synthetic_messages(n, words_per_message=1000, seed=12)
    packets = []
    for g, m in zip(groups.tolist(), msgs, strict=True):
        packets.extend(parse(m, io_group=g))
    path = tmp / "reference.h5"

    def work() -> None:
        path.unlink(missing_ok=True)
        to_file(str(path), packet_list=packets, workers=1)

    return len(packets) / best_time(work, 1)


def run(quick: bool) -> list[Row]:
    n = 500_000 if quick else 5_000_000
    repeat = 2 if quick else 3
    rows = _rows(n)
    mb = len(rows) * PACKETS_DTYPE.itemsize / 1e6
    out: list[Row] = []
    best = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-hdf5-") as tmpdir:
        tmp = Path(tmpdir)
        path = tmp / "ours.h5"
        cases = [
            ("ours, appends of 256k rows, no compression", 262_144, {}),
            ("ours, appends of 1000 rows (buffered)", 1000, {}),
            ("ours, SWMR, appends of 256k rows", 262_144, {"swmr": True}),
            ("ours, lzf", 262_144, {"compression": "lzf"}),
            ("ours, gzip", 262_144, {"compression": "gzip"}),
        ]
        for name, append_rows, kwargs in cases:
            dt = best_time(lambda a=append_rows, k=kwargs: _write(path, rows, a, **k), repeat)
            rate = len(rows) / dt
            if not kwargs:
                best = max(best, rate)
            size = path.stat().st_size / 1e6
            out.append(Row(name, rate, "rows/s",
                           f"{mb / dt:,.0f} MB/s, {of_memcpy(mb * 1e6 / dt)}; file "
                           f"{size:,.0f} MB for {len(rows):,} rows"))
        assert np.array_equal(read_packets(path), rows)
        ref = _reference_rate(tmp, 10_000 if quick else 30_000)
    if ref is not None:
        out.append(Row("larpix-control 3.7 to_file", ref, "rows/s",
                       f"{ref * PACKETS_DTYPE.itemsize / 1e6:.2f} MB/s; one process"))
        out.append(Row("ratio ours / reference", best / ref, "x", "uncompressed, best of ours"))
    return out
