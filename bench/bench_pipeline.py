"""End-to-end data path: simulated board -> producer -> aggregator -> storage -> file.

Every component is its own process under a real core, as `larpix-daq up` runs them. The
producer sends as fast as credit allows (``--sim-rate 0``) from a pool of pre-generated
messages, so the figure is the data path's and not the physics model's (bench_simboard
measures that). Reported: packets written per second over the run, packets lost (must be
0), the file's row count against what the producer sent, storage's resident memory
sampled every second (peak and last), and CPU seconds each process used. The run is made
twice, storage committing to the disk itself (``fsync``, the default) and only to the kernel
(``--no-sync``), and the ratio of the two rates is what durability costs here.

Run alone with ``python -m bench pipeline [--quick]``; ``python bench/bench_pipeline.py
--seconds N`` for another duration.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.table import Row, memcpy_bandwidth, of_memcpy
from larpixdaq.formats.rows import PACKETS_DTYPE

TITLE = "Data path: sim board -> producer -> aggregator -> storage -> HDF5, zero loss"
CLI = [sys.executable, "-m", "larpixdaq.cli"]
TICK = os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return float("nan")


def _start(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE,
                            stderr=open(log, "ab"), text=True)  # noqa: SIM115
    return proc, proc.stdout.readline()


def measure(seconds: float, words_per_message: int = 8192, boards: int = 1,
            sync: bool = True) -> list[Row]:
    from larpixdaq.formats.hdf5file import Hdf5File
    from larpixdaq.runcontrol.operator import Operator
    from larpixdaq.runcontrol.testing import CoreProcess, wait_for

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    procs: dict[str, subprocess.Popen] = {}
    core = CoreProcess(tmp / "runs.sqlite", extra=["--ack-timeout", "20",
                                                   "--heartbeat-timeout", "3"]).start()
    try:
        c = ["--core", core.endpoint]
        procs["aggregator"], line = _start(
            ["aggregator", *c, "--inlet", "tcp://127.0.0.1:0", "--outlet", "tcp://127.0.0.1:0",
             "--monitor", "tcp://127.0.0.1:0"], tmp / "aggregator.log")
        inlet, outlet = [w for w in line.replace(",", " ").split() if "://" in w][:2]
        procs["storage"], _ = _start(["storage", *c, "--aggregator", outlet, "--data-dir",
                                      str(tmp / "data"), *([] if sync else ["--no-sync"])],
                                     tmp / "storage.log")
        for g in range(1, boards + 1):
            procs[f"producer-{g}"], _ = _start(
                ["producer", *c, "--aggregator", inlet, "--io-group", str(g), "--sim-rate", "0",
                 "--sim-pool", "64", "--words-per-message", str(words_per_message),
                 "--data-dir", str(tmp / "data")],
                tmp / f"producer-{g}.log")
        op = Operator(core.endpoint, timeout=30)
        wait_for(lambda: len(op.call("clients").data.get("components", [])) == 2 + boards,
                 timeout=30)
        cpu0 = {n: _cpu_s(p.pid) for n, p in procs.items()}
        assert op.call("prepare_run", {"comment": "bench", "run_type": "bench"}).success
        assert op.call("begin_run").success
        t0 = time.perf_counter()
        rss = []
        while time.perf_counter() - t0 < seconds:
            time.sleep(min(1.0, seconds / 10))
            rss.append(_rss_mb(procs["storage"].pid))
        end = op.call("end_run")
        elapsed = time.perf_counter() - t0
        assert end.success, end.message
        cpu = {n: _cpu_s(p.pid) - cpu0[n] for n, p in procs.items()}
        run = op.call("runs").data["runs"][0]
        op.close()
        rows = 0
        for f in run["files"]:
            with Hdf5File(f) as h:
                rows += h.n_packets
        sent = sum(int(run["counters"][f"producer-{g}"]["packets_sent"])
                   for g in range(1, boards + 1))
        storage = run["counters"]["storage"]
        chip_rows = storage["words_received"]
        rate = run["packets_written"] / elapsed
        out = [
            Row("packets written per second", rate, "packets/s",
                f"{elapsed:.1f} s run, {boards} board(s), {words_per_message} words/message, "
                f"commits {'synced to the disk' if sync else 'to the kernel only (--no-sync)'}"
                f"; rows {of_memcpy(rate * PACKETS_DTYPE.itemsize)}"),
            Row("packets lost", run["packets_lost"], "packets", "must be 0"),
            Row("chip packets sent by producers", sent, "packets"),
            Row("chip packets in the file", chip_rows, "packets",
                "equal to sent" if chip_rows == sent else "DIFFERS FROM SENT"),
            Row("rows in the file (incl. timestamp/marker rows)", rows, "rows",
                "= packets_written" if rows == run["packets_written"] else "DIFFERS"),
            Row("storage RSS peak", max(rss), "MB", f"first {rss[0]:.0f} MB, last {rss[-1]:.0f}"
                " MB (sampled every second)"),
        ]
        for name, secs in cpu.items():
            out.append(Row(f"CPU of {name}", secs / elapsed * 100, "% of a core"))
        return out
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            p.stdout.close()
        core.terminate()
        for f in (tmp / "data").glob("*.h5"):
            f.unlink()


def storage_costs(n_messages: int = 64, words: int = 8192) -> list[Row]:
    """Where storage's time goes, per packet, measured in this process on the same data."""
    import hashlib

    from bench.table import best_time
    from larpixdaq.boards.simboard import SimulatedBoard
    from larpixdaq.formats.hdf5file import Hdf5Writer
    from larpixdaq.formats.pacman import decode_data_messages, encode_data_message

    board = SimulatedBoard(1).bring_up_all()
    msgs = [encode_data_message(0, board.generate_packets(words)[:words])
            for _ in range(n_messages)]
    n = n_messages * words
    rows = decode_data_messages(msgs, 1).rows
    t_decode = best_time(lambda: decode_data_messages(msgs, 1), 3)
    t_sha = best_time(lambda: hashlib.sha256(rows.data).digest(), 3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    with Hdf5Writer(tmp / "x.h5", swmr=True) as w:
        t_append = best_time(lambda: (w.append(rows), w.flush()), 3)
        t_synced = best_time(lambda: (w.append(rows), w.flush(), os.fsync(w.fileno())), 3)
    (tmp / "x.h5").unlink()
    return [
        Row("storage: decode PACMAN messages", t_decode / n * 1e9, "ns/packet",
            f"batches of {n_messages} x {words} words"),
        Row("storage: HDF5 append + flush (SWMR)", t_append / n * 1e9, "ns/packet",
            "the writer's SHA-256 runs on a thread of its own, beside this"),
        Row("storage: HDF5 append + flush + fsync", t_synced / n * 1e9, "ns/packet",
            f"{t_synced / t_append:.2f}x the same without fsync, on {tmp.parent}'s disk"),
        Row("memory copy of a row (yardstick)", PACKETS_DTYPE.itemsize / memcpy_bandwidth()
            * 1e9, "ns/packet", f"{PACKETS_DTYPE.itemsize} bytes at this run's copy bandwidth"),
        Row("storage: SHA-256 of the rows", t_sha / n * 1e9, "ns/packet",
            "on its own; off the writing thread's path"),
    ]


def with_and_without_sync(seconds: float, words_per_message: int = 8192, boards: int = 1
                          ) -> list[Row]:
    """The run twice, synced and not; the last row is the ratio of their rates."""
    synced = measure(seconds, words_per_message, boards, sync=True)
    kernel = measure(seconds, words_per_message, boards, sync=False)
    ratio = synced[0].value / kernel[0].value if kernel[0].value else float("nan")
    return [*synced, *kernel, Row("rate synced / rate not synced", ratio, "x",
                                  "what putting each commit on the disk costs")]


def run(quick: bool) -> list[Row]:
    return with_and_without_sync(5.0 if quick else 30.0) + storage_costs()


if __name__ == "__main__":
    import argparse

    from bench.table import print_table

    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--words-per-message", type=int, default=8192)
    ap.add_argument("--boards", type=int, default=1)
    a = ap.parse_args()
    print_table(TITLE, with_and_without_sync(5.0 if a.quick else a.seconds,
                                             a.words_per_message, a.boards))
