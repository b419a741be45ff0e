"""Convert end to end (raw PACMAN file -> LArPix+HDF5 v2.4): packets/s and peak memory.

The command is timed as a user runs it, in a fresh process (``larpix-daq convert``), so
the peak memory is that of the conversion alone; the library call is timed in process
too, without interpreter start-up. The reference route (``from_rawfile`` + ``parse`` +
``to_file``, as larpix-control documents it) runs on a smaller file.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.table import Row, best_time, of_memcpy
from larpixdaq.convert import convert
from larpixdaq.demo import write_synthetic_raw
from larpixdaq.formats.rows import PACKETS_DTYPE

TITLE = "convert raw PACMAN file -> LArPix+HDF5 v2.4, end to end"
TARGET = 5e6


def _cli_run(raw: Path, out: Path) -> tuple[float, float]:
    """Wall time and peak RSS (MB) of `larpix-daq convert` in a child process.

    Peak RSS is VmHWM: ru_maxrss of an exec'd child inherits the parent's high-water mark.
    """
    code = (
        "import resource, sys, time\n"
        "from larpixdaq.cli import main\n"
        "t0 = time.perf_counter()\n"
        f"rc = main(['convert', {str(raw)!r}, {str(out)!r}, '--force'])\n"
        "dt = time.perf_counter() - t0\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
        "print('BENCH', dt, int(hwm[0].split()[1]) / 1024.0 if hwm else float('nan'))\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("BENCH"))
    _, dt, rss = line.split()
    return float(dt), float(rss)


def _reference_rate(tmp: Path, n: int) -> float | None:
    try:
        from larpix.format.hdf5format import to_file
        from larpix.format.pacman_msg_format import parse
        from larpix.format.rawhdf5format import from_rawfile
    except ImportError:
        return None
    raw = tmp / "ref-raw.h5"
    write_synthetic_raw(raw, n, seed=21)
    out = tmp / "ref-out.h5"

    def work() -> None:
        out.unlink(missing_ok=True)
        loaded = from_rawfile(str(raw))
        packets = []
        for g, m in zip(loaded["msg_headers"]["io_groups"], loaded["msgs"], strict=True):
            packets.extend(parse(m, io_group=g))
        to_file(str(out), packet_list=packets, workers=1)

    return n / best_time(work, 1)


def run(quick: bool) -> list[Row]:
    n = 1_000_000 if quick else 10_000_000
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmpdir:
        tmp = Path(tmpdir)
        raw = tmp / "raw.h5"
        t0 = time.perf_counter()
        n_msgs = write_synthetic_raw(raw, n, seed=20)
        made = time.perf_counter() - t0
        raw_mb = raw.stat().st_size / 1e6
        out = tmp / "out.h5"
        summary = None

        def lib() -> None:
            nonlocal summary
            summary = convert(raw, out, overwrite=True)

        dt = best_time(lib, 2 if quick else 3)
        assert summary is not None and summary.n_chip_packets == n
        rate = n / dt
        rows.append(Row("convert() in process", rate, "packets/s",
                        f"{n:,} packets in {n_msgs:,} msgs ({raw_mb:,.0f} MB raw, made in "
                        f"{made:.1f} s); {dt:.2f} s; rows "
                        f"{of_memcpy(rate * PACKETS_DTYPE.itemsize)}"))
        for compression in ("lzf", "gzip"):
            cdt = best_time(lambda c=compression: convert(raw, out, overwrite=True,
                                                          compression=c), 1)
            rows.append(Row(f"convert() in process, {compression}", n / cdt, "packets/s",
                            f"output {out.stat().st_size / 1e6:,.0f} MB"))
        cli_dt, rss = _cli_run(raw, out)
        rows.append(Row("larpix-daq convert (fresh process)", n / cli_dt, "packets/s",
                        f"{cli_dt:.2f} s; output {out.stat().st_size / 1e6:,.0f} MB"))
        rows.append(Row("peak memory of larpix-daq convert", rss, "MB",
                        "RSS of the converting process (interpreter + numpy + h5py included)"))
        ref = _reference_rate(tmp, 10_000 if quick else 30_000)
    if ref is not None:
        rows.append(Row("larpix-control 3.7 from_rawfile+parse+to_file", ref, "packets/s",
                        "smaller file, one process"))
        rows.append(Row("ratio ours / reference", rate / ref, "x", "in-process convert()"))
    rows.append(Row("target met (>= 5 M packets/s)", float(rate >= TARGET), "yes=1",
                    f"{rate / 1e6:.1f} M packets/s; bench process peak "
                    f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"))
    return rows
