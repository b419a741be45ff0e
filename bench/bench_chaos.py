"""Chaos: a run with two boards while a random component, the producers included, is
SIGKILLed every few seconds; afterwards every packet the boards published is in the run's
files exactly once, except what a killed producer could not have seen, which lies inside
the data gaps the run recorded.

The DAQ is what `larpix-daq up` starts (its own ``build``: core, log collector, aggregator,
storage, two producers, monitor), supervised the same way (a child that dies is started
again). Each board is a PACMAN emulator (a simulated board at a fixed rate) in this process,
read by its producer with ``--board pacman:...``, and a subscriber of ours records every
data message it publishes (the truth, :mod:`bench.boardtruth`): a board must outlive its
producer, or what a killed producer had read would die with it. Every ``period`` seconds one
of the aggregator, storage, monitor, log collector, core or a producer is SIGKILLed (the
kinds in a shuffled cycle, so each comes up in any run of six kills). Then the killing
stops, the run is ended once every component is back, and per io_group the files are
checked against the truth (:mod:`larpixdaq.pipeline.gapcheck`): in order, once; what is
missing only inside a recorded gap, no more gaps than kills of the board's producer, nothing
missing if it was not killed. The run record must agree: ``packets_written`` = rows,
``packets_lost`` = 0, exit status ``success`` with no producer killed, else ``degraded``
with the data gaps as its only losses.

``stall``: one simulated board in its producer (recording what it sends, ``--record``) while
storage or the aggregator is stopped (SIGSTOP): held, spilled, replayed, nothing lost.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.boardtruth import BoardTruth
from bench.table import Row

TITLE = "Chaos: SIGKILL a random component (producers too) every few seconds, zero loss"
KILLABLE = ("aggregator", "storage", "monitor", "logs", "core", "producer")
"""What the chaos kills; "producer" is one of the boards' producers, chosen at random."""


@dataclass
class ChaosResult:
    """What a chaos run did and found."""

    kills: list[str] = field(default_factory=list)  # the names killed, in order
    run: dict[str, Any] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)  # io_group -> packets published
    words: dict[int, int] = field(default_factory=dict)  # io_group -> PACMAN words published
    in_files: dict[int, int] = field(default_factory=dict)  # io_group -> chip packets in files
    exactly_once: dict[int, bool] = field(default_factory=dict)  # stall: files == --record
    verdicts: dict[int, Any] = field(default_factory=dict)  # chaos: gapcheck.Verdict
    sent_before_end: dict[str, int] = field(default_factory=dict)  # producers' packets_sent
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        """Packets missing from the files outside every recorded gap."""
        if self.verdicts:
            return sum(v.rows_lost for v in self.verdicts.values())
        return sum(max(0, self.sent[g] - self.in_files.get(g, 0)) for g in self.sent)

    def killed(self, io_group: int) -> int:
        """How many times the producer of ``io_group`` was killed."""
        return self.kills.count(f"producer-{io_group}")

    def kinds(self) -> dict[str, int]:
        """Kills per kind (every producer counts as "producer")."""
        kind = [("producer" if k.startswith("producer-") else k) for k in self.kills]
        return {k: kind.count(k) for k in KILLABLE if k in kind}

    @property
    def expected_status(self) -> str:
        """A producer's death is recorded dead time (a data gap): the run is degraded."""
        return "degraded" if any(k.startswith("producer-") for k in self.kills) else "success"


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

    def kill_now_and_then(children: dict, result: ChaosResult, op: Any, wait: Any) -> None:
        producers = sorted(n for n in children if n.startswith("producer-"))
        order: list[str] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(period * rng.uniform(0.7, 1.3))
            if not order:  # each kind once per cycle, in a new order each cycle
                order = rng.sample(KILLABLE, len(KILLABLE))
            # the next kind in the cycle with a process to kill (one still being started
            # again keeps its turn for the next kill)
            alive = {n: c.proc for n, c in children.items()
                     if c.proc is not None and c.proc.poll() is None}
            for i in reversed(range(len(order))):
                can = [p for p in producers if p in alive] if order[i] == "producer" else (
                    [order[i]] if order[i] in alive else [])
                if can:
                    break
            else:
                continue
            order.pop(i)
            victim = rng.choice(can)
            proc = alive[victim]
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)  # dead, so nothing after this mistakes it for a live one
            result.kills.append(victim)
            say(f"  {time.monotonic() - t0:5.1f} s: SIGKILL {victim}")
        result.seconds = time.monotonic() - t0

    return exercise_boards(tmp, kill_now_and_then, rate=rate)


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


@dataclass
class Daq:
    """`up`'s DAQ under its supervisor, with an operator; what the exercises share."""

    tmp: Path
    children: dict[str, Any]
    op: Any

    def all_back(self) -> bool:
        """Every child runs, nothing is missing from the run, and the core and every
        registered component are the processes running now (not a killed one whose death
        the core has not noticed yet)."""
        status = self.op.call("status")
        if not status.success or status.data.get("missing"):
            return False
        live = {n: c.proc.pid for n, c in self.children.items()
                if c.proc is not None and c.proc.poll() is None}
        registered = {c["name"]: c["pid"] for c in status.data["components"]}
        return (len(live) == len(self.children) and status.data.get("pid") == live["core"]
                and registered == {n: pid for n, pid in live.items() if n != "core"})

    def producers(self) -> dict[str, dict[str, Any]]:
        """The counters each registered producer reports, by name."""
        return {c["name"]: c.get("counters", {}) for c in self.op.call("clients").data[
            "components"] if c["role"] == "producer"}

    def wait(self, cond: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if cond():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the DAQ did not come back within {timeout:g} s "
                           f"(see {self.tmp / 'up.log'})")

    def begin(self) -> None:
        self.wait(self.all_back, 60)
        _retry(lambda: self.op.prepare_run(comment="chaos").wait())
        _retry(lambda: self.op.begin_run().wait())

    def end(self) -> dict[str, Any]:
        final = _retry(lambda: self.op.end_run().wait(), timeout=120)
        return final.data["run"]


@contextlib.contextmanager
def up_daq(tmp: Path, boards: list[str], *, rate: float,
           producer_args: Callable[[int], list[str]] | None = None) -> Iterator[Daq]:
    """`up`'s DAQ with ``boards`` (``--board`` values, io_groups 1, 2, ...; the producer of
    io_group g also given ``producer_args(g)``), started and supervised in a thread;
    everything is stopped on the way out."""
    from larpixdaq.commands.up import build, configure
    from larpixdaq.runcontrol.operator import Operator

    port = _free_base_port()
    core = f"tcp://127.0.0.1:{port}"
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args([
        "--data-dir", str(tmp / "data"), "--core", core,
        *(x for b in boards for x in ("--board", b)),
        "--sim-rate", str(rate), "--no-web", "--rejoin-grace", "30"])
    sup = build(args)
    log = open(tmp / "up.log", "a")  # noqa: SIM115 - closed below
    sup.out = log
    children = {c.name: c for c in sup.children}
    for g in range(1, len(boards) + 1):
        children[f"producer-{g}"].args += producer_args(g) if producer_args else []
    children["core"].args += ["--heartbeat-timeout", "2", "--ack-timeout", "30"]
    watcher = threading.Thread(target=sup.watch, daemon=True)
    op = None
    try:
        sup.start_all()
        watcher.start()
        op = Operator(core, timeout=10)
        yield Daq(tmp, children, op)
    finally:
        if op is not None:
            op.close()
        sup.stop_all()
        watcher.join(5)
        log.close()


def exercise(tmp: Path, disturb: Any, *, rate: float, boards: int = 2,
             producer_args: list[str] | None = None) -> ChaosResult:
    """`up`'s DAQ with ``boards`` simulated boards in recording producers, a run during
    which ``disturb`` (children, result, operator, wait) does its worst, the files checked
    against the recordings (in order, once)."""
    import numpy as np

    from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES, decode_data_messages
    from larpixdaq.formats.rawfile import open_raw
    from larpixdaq.formats.rows import MESSAGE
    from larpixdaq.pipeline.runfile import read_run_packets

    groups = list(range(1, boards + 1))
    result = ChaosResult()
    def recording(g: int) -> list[str]:
        return ["--record", str(tmp / f"sent-{g}-{{run}}.raw"),
                *(producer_args or ["--words-per-message", "1000"])]

    with up_daq(tmp, ["sim"] * boards, rate=rate, producer_args=recording) as daq:
        daq.begin()
        disturb(daq.children, result, daq.op, daq.wait)
        daq.wait(daq.all_back, 120)
        run = daq.end()
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


def exercise_boards(tmp: Path, disturb: Any, *, rate: float, boards: int = 2) -> ChaosResult:
    """`up`'s DAQ reading ``boards`` PACMAN emulators of this process (each recorded by a
    subscriber of ours: the truth), a run during which ``disturb`` (children, result,
    operator, wait) does its worst, and per io_group the files checked against the truth
    with the run's data gaps (:func:`larpixdaq.pipeline.gapcheck.check_against_truth`)."""
    import numpy as np

    from larpixdaq.formats.rows import MESSAGE
    from larpixdaq.pipeline.gapcheck import check_against_truth
    from larpixdaq.pipeline.gapmark import gap_interval
    from larpixdaq.pipeline.runfile import read_run_packets

    groups = list(range(1, boards + 1))
    result = ChaosResult()
    truths: dict[int, BoardTruth] = {}
    try:
        for g in groups:  # subscribed, and the data held until the run has begun
            truths[g] = BoardTruth(g, rate).start()
        with up_daq(tmp, [truths[g].board for g in groups], rate=rate) as daq:
            daq.begin()
            for t in truths.values():
                t.resume()
            disturb(daq.children, result, daq.op, daq.wait)
            daq.wait(daq.all_back, 120)
            # A restarted producer says its gap with its first data: it must have some.
            daq.wait(lambda: all(c.get("packets_sent", 0) > 0
                                 for c in daq.producers().values()), 60)
            for t in truths.values():
                t.hold()
            stretches = {g: truths[g].stretch() for g in groups}
            # Every producer sent what its board published (a restarted one: a tail of it);
            # seen twice in a row, so not a count caught half-way that happens to match.
            tails = {g: set(np.cumsum(s.words[::-1]).tolist()) for g, s in stretches.items()}
            seen: list[dict[str, int]] = []

            def sent_all() -> bool:
                now = {n: c.get("packets_sent", -1) for n, c in daq.producers().items()}
                seen.append(now)
                return (len(seen) > 1 and seen[-2] == now
                        and all(now.get(f"producer-{g}") in tails[g] for g in groups))

            daq.wait(sent_all, 60)
            result.sent_before_end = seen[-1]
            run = daq.end()
    finally:
        for t in truths.values():
            t.stop()
    result.run = run
    rows = read_run_packets(run["files"])
    gaps: dict[int, list[tuple[int, int]]] = {g: [] for g in groups}
    for text in run["incidents"]:
        interval = gap_interval(text)
        if interval is not None:
            gaps.setdefault(interval[0], []).append(interval[1:])
    for g in groups:
        s = stretches[g]
        got = rows[(rows["io_group"] == g) & (rows["packet_type"] != MESSAGE)]
        result.verdicts[g] = check_against_truth(s.rows, s.of_message, s.times, got,
                                                 gaps[g], result.killed(g))
        result.sent[g] = len(s.rows)
        result.words[g] = int(s.words.sum())
        result.in_files[g] = len(got)
    result.run["rows_in_files"] = len(rows)
    return result


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
    verdicts = r.verdicts.values()
    kinds = ", ".join(f"{k} {n}" for k, n in r.kinds().items())
    if r.kinds().get("producer"):
        each = sorted({k for k in r.kills if k.startswith("producer-")})
        kinds += f" ({', '.join(f'{p} {r.kills.count(p)}' for p in each)})"
    gaps = sum(v.gaps for v in verdicts)
    problems = [f"io_group {g}: {p}" for g, v in r.verdicts.items() for p in v.problems]
    status = run["exit_status"]
    return [
        Row("kills survived", len(r.kills), "SIGKILLs", f"{r.seconds:.0f} s of run: {kinds}"),
        Row("packets the boards published", sum(r.sent.values()), "packets",
            "PACMAN emulators, recorded by a subscriber"),
        Row("packets in the run files", sum(r.in_files.values()), "packets",
            "in order, once" if not problems else "; ".join(problems)),
        Row("packets in recorded gaps", sum(v.rows_in_gaps for v in verdicts), "packets",
            f"{gaps} gaps ({sum(v.missing for v in verdicts)} messages) for "
            f"{r.kinds().get('producer', 0)} producer kills"),
        Row("lost", r.lost, "packets", "must be 0: missing outside every recorded gap"),
        Row("run record: packets_written", run["packets_written"], "rows",
            "= rows in the files" if run["packets_written"] == run["rows_in_files"]
            else "DIFFERS"),
        Row("run record: packets_lost", run["packets_lost"], "packets", "must be 0"),
        Row("run record: exit status", 1.0 if status == r.expected_status else 0.0, "",
            f"{status} (expected {r.expected_status}); {len(run['incidents'])} incidents, "
            f"{len(run['resolved_incidents'])} resolved; storage streams_unfinished "
            f"{run['counters'].get('storage', {}).get('streams_unfinished')}"),
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
