"""Chaos: a run with two simulated boards while a random component is SIGKILLed every few
seconds; afterwards every packet the boards sent is in the run's files exactly once.

The DAQ is what `larpix-daq up` starts (its own ``build``: core, log collector, aggregator,
storage, two producers, monitor), supervised the same way (a child that dies is started
again), with each producer also recording what its board sent (``--record``: the truth).
Every ``period`` seconds one of the aggregator, storage, monitor, log collector or core,
chosen at random, is SIGKILLed. Then the killing stops, the run is ended once every
component is back, and the run's files are compared with the recordings: per io_group the
chip packets must be the recorded ones, in order, once each, and the run record's counters
must agree (``packets_written`` = rows, ``packets_lost`` = 0, ``exit_status`` success).

Producers are not killed here: a simulated board lives inside its producer, so what a
killed producer had read and not yet forwarded dies with the board that "sent" it, and the
recording would name packets no DAQ could have kept.

``python -m bench chaos`` (a minute; ``--quick``: 20 s); the suite runs it shortened
(tests/pipeline/test_chaos.py).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.table import Row

TITLE = "Chaos: SIGKILL a random component every few seconds during a run, zero loss"
KILLABLE = ("aggregator", "storage", "monitor", "logs", "core")


@dataclass
class ChaosResult:
    """What a chaos run did and found."""

    kills: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)  # io_group -> chip packets recorded
    words: dict[int, int] = field(default_factory=dict)  # io_group -> PACMAN words recorded
    in_files: dict[int, int] = field(default_factory=dict)  # io_group -> chip packets in files
    exactly_once: dict[int, bool] = field(default_factory=dict)  # files == recording, in order
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return sum(max(0, self.sent[g] - self.in_files.get(g, 0)) for g in self.sent)


def _free_base_port() -> int:
    """A port P with P, P+1 and P+10..12 free (the layout `up` uses)."""
    for _ in range(200):
        base = random.randrange(20_000, 60_000)
        try:
            for offset in (0, 1, 10, 11, 12):
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for the chaos run")


def _retry(fn: Any, timeout: float = 60.0) -> Any:
    """``fn()`` until it returns a successful result (the core may be restarting)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = fn()
            if last is not None and last.success:
                return last
        time.sleep(0.2)
    raise RuntimeError(f"no success within {timeout:g} s: {getattr(last, 'message', last)}")


def chaos(tmp: Path, seconds: float = 60.0, period: float = 3.0, rate: float = 100_000,
          seed: int | None = None, say: Any = None) -> ChaosResult:
    """Run the chaos (see the module docstring) in ``tmp``; returns what it found."""
    rng = random.Random(seed)
    say = say or (lambda text: None)

    def kill_at_random(children: dict, result: ChaosResult, op: Any, wait: Any) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(period * rng.uniform(0.7, 1.3))
            victim = rng.choice(KILLABLE)
            proc = children[victim].proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                result.kills.append(victim)
                say(f"  {time.monotonic() - t0:5.1f} s: SIGKILL {victim}")
        result.seconds = time.monotonic() - t0

    return exercise(tmp, kill_at_random, rate=rate)


def stall(tmp: Path, victim: str = "storage", seconds: float = 20.0,
          rate: float = 1_000_000, hold_mb: float = 256, say: Any = None) -> ChaosResult:
    """One board at ``rate`` packets/s while ``victim`` is stopped (SIGSTOP) for ``seconds``:
    the producer holds ``hold_mb`` in memory, spills the rest, replays it afterwards."""
    say = say or (lambda text: None)

    def stop_for_a_while(children: dict, result: ChaosResult, op: Any, wait: Any) -> None:
        time.sleep(2.0)
        proc = children[victim].proc
        proc.send_signal(signal.SIGSTOP)
        say(f"  SIGSTOP {victim} for {seconds:g} s")
        t0 = time.monotonic()
        try:
            time.sleep(seconds)
        finally:
            proc.send_signal(signal.SIGCONT)
        result.seconds = time.monotonic() - t0
        result.kills.append(victim)

        def drained() -> bool:
            producers = [c["counters"] for c in op.call("clients").data["components"]
                         if c["role"] == "producer"]
            return bool(producers) and all(
                c.get("frames_replayed", 0) == c.get("frames_spilled", 0)
                and c.get("frames_held", 0) < 2000 for c in producers)

        t1 = time.monotonic()
        wait(drained, 600)
        say(f"  drained {time.monotonic() - t1:.1f} s after {victim} went on")

    return exercise(tmp, stop_for_a_while, rate=rate, boards=1,
                    producer_args=["--sim-pool", "64", "--words-per-message", "4096",
                                   "--hold-mb", str(hold_mb)])


def exercise(tmp: Path, disturb: Any, *, rate: float, boards: int = 2,
             producer_args: list[str] | None = None) -> ChaosResult:
    """`up`'s DAQ with ``boards`` recording producers, a run during which ``disturb``
    (children, result, operator, wait) does its worst, the files checked against the
    recordings."""
    import numpy as np

    from larpixdaq.commands.up import build, configure
    from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES, decode_data_messages
    from larpixdaq.formats.rawfile import open_raw
    from larpixdaq.formats.rows import MESSAGE
    from larpixdaq.pipeline.runfile import read_run_packets
    from larpixdaq.runcontrol.operator import Operator

    port = _free_base_port()
    core = f"tcp://127.0.0.1:{port}"
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([
        "--data-dir", str(tmp / "data"), "--core", core, *["--board", "sim"] * boards,
        "--sim-rate", str(rate), "--no-web", "--rejoin-grace", "30"])
    sup = build(args)
    log = open(tmp / "up.log", "a")  # noqa: SIM115 - closed below
    sup.out = log
    children = {c.name: c for c in sup.children}
    groups = list(range(1, boards + 1))
    for g in groups:
        children[f"producer-{g}"].args += [
            "--record", str(tmp / f"sent-{g}-{{run}}.raw"),
            *(producer_args or ["--words-per-message", "1000"])]
    children["core"].args += ["--heartbeat-timeout", "2", "--ack-timeout", "30"]
    result = ChaosResult()
    watcher = threading.Thread(target=sup.watch, daemon=True)
    op = None
    try:
        sup.start_all()
        watcher.start()
        op = Operator(core, timeout=10)
        expected = len(sup.children) - 1  # every child but the core registers

        def all_back() -> bool:
            final = op.call("clients")
            status = op.call("status")
            return (final.success and len(final.data["components"]) == expected
                    and status.success and not status.data.get("missing"))

        def wait(cond: Any, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    if cond():
                        return
                time.sleep(0.2)
            raise RuntimeError(f"the DAQ did not come back within {timeout:g} s "
                               f"(see {tmp / 'up.log'})")

        wait(all_back, 60)
        _retry(lambda: op.prepare_run(comment="chaos").wait())
        _retry(lambda: op.begin_run().wait())
        disturb(children, result, op, wait)
        wait(all_back, 120)
        final = _retry(lambda: op.end_run().wait(), timeout=120)
        run = final.data["run"]
        result.run = run
        rows = read_run_packets(run["files"])
        for g in groups:
            with open_raw(tmp / f"sent-{g}-{run['run_number']}.raw") as f:
                msgs, _ = f.read()
            sent = decode_data_messages(msgs, g).rows
            result.words[g] = sum((len(m) - HEADER_BYTES) // WORD_BYTES for m in msgs)
            got = rows[(rows["io_group"] == g) & (rows["packet_type"] != MESSAGE)]
            result.sent[g] = len(sent)
            result.in_files[g] = len(got)
            result.exactly_once[g] = bool(np.array_equal(got, sent))
        result.run["rows_in_files"] = len(rows)
        return result
    finally:
        if op is not None:
            op.close()
        sup.stop_all()
        watcher.join(5)
        log.close()


def run(quick: bool) -> list[Row]:
    import shutil
    import tempfile

    # Each measure in a directory of its own, removed afterwards (a stall writes GBs).
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        out = rows(chaos(Path(tmp), seconds=20.0 if quick else 60.0, period=3.0, say=print))
    for victim in ("storage", "aggregator"):
        tmp = tempfile.mkdtemp(prefix="bench-stall-")
        try:
            r = stall(Path(tmp), victim, seconds=5.0 if quick else 20.0, rate=1_000_000,
                      hold_mb=64, say=print)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        out += stall_rows(r, victim)
    return out


def stall_rows(r: ChaosResult, victim: str) -> list[Row]:
    """The figures of a stall: what the producer held, spilled and replayed, and the loss."""
    c = r.run["counters"]["producer-1"]
    what = f"{victim} stopped {r.seconds:.0f} s, 1 M packets/s"
    return [
        Row(f"{what}: packets sent", sum(r.sent.values()), "packets",
            "all in the files, in order, once" if all(r.exactly_once.values())
            else "DIFFER FROM WHAT WAS SENT"),
        Row(f"{what}: lost", r.lost + r.run["packets_lost"], "packets",
            f"must be 0; run {r.run['exit_status']}"),
        Row(f"{what}: held in memory at most", c["max_bytes_held"] / 2**20, "MB",
            "--hold-mb 64"),
        Row(f"{what}: spilled and replayed", c["bytes_spilled"] / 2**20, "MB",
            f"{c['frames_spilled']} frames spilled, {c['frames_replayed']} replayed"),
    ]


def rows(r: ChaosResult) -> list[Row]:
    """The figures of a chaos run."""
    run = r.run
    kinds = ", ".join(f"{k} {r.kills.count(k)}" for k in KILLABLE if k in r.kills)
    return [
        Row("kills survived", len(r.kills), "SIGKILLs", f"{r.seconds:.0f} s of run: {kinds}"),
        Row("packets the boards sent", sum(r.sent.values()), "packets", "the --record files"),
        Row("packets in the run files", sum(r.in_files.values()), "packets",
            "each board's, in order, once" if all(r.exactly_once.values())
            else "DIFFER FROM WHAT WAS SENT"),
        Row("lost", r.lost, "packets", "must be 0"),
        Row("run record: packets_written", run["packets_written"], "rows",
            "= rows in the files" if run["packets_written"] == run["rows_in_files"]
            else "DIFFERS"),
        Row("run record: packets_lost", run["packets_lost"], "packets", "must be 0"),
        Row("run record: exit status", 1.0 if run["exit_status"] == "success" else 0.0, "",
            f"{run['exit_status']}; {len(run['incidents'])} incidents, "
            f"{len(run['resolved_incidents'])} resolved"),
    ]


if __name__ == "__main__":
    from bench.table import print_table

    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--period", type=float, default=3.0)
    a = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        print_table(TITLE, rows(chaos(Path(tmp), a.seconds, a.period, say=print)))
