"""A producer SIGKILLed mid-run and started again under the same name: what it had read is
in the files exactly once (its successor sends again what its frame log holds), the hole
its death left is an incident of the run and a row of the run file, and a spill file it
left is kept and reported."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
from daq_procs import Daq, Proc

from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline import framelog
from larpixdaq.pipeline.runfile import read_run_messages, read_run_packets
from larpixdaq.runcontrol.statemachine import run_losses
from larpixdaq.runcontrol.testing import wait_for

RATE = 50_000
ONE_READ = RATE // 2 + 1000 + 100
"""Chip packets one read of a simulated board at ``RATE`` gives at most: its budget (half a
second of the rate, and one message of the run's 1000 words), and the SYNC words among them."""


def _producer(daq: Daq) -> Proc:
    (p,) = (p for p in daq.procs if p.args[0] == "producer" and p.proc is not None)
    return p


def _run_number(daq: Daq) -> int:
    """The run in progress: its number is in the name of the board's recording."""
    wait_for(lambda: list(daq.tmp.glob("sent-1-*.raw")), timeout=20)
    (path,) = daq.tmp.glob("sent-1-*.raw")
    return int(path.stem.split("-")[2])


def _packets_sent(daq: Daq) -> int:
    return sum(c.get("counters", {}).get("packets_sent", 0) for c in daq.clients()
               if c["role"] == "producer")


def _kill_and_restart(daq: Daq, run: int, before_kill=None) -> Path:
    """SIGKILL producer-1 and start it again; returns the dead one's recording (the
    successor's goes next to it, ``-2``: a recording is never replaced)."""
    old = _producer(daq)
    if before_kill is not None:
        before_kill()
    old.stop(signal.SIGKILL)
    dead = daq.tmp / f"sent-1-{run}.raw"
    wait_for(lambda: all(c["name"] != "producer-1" for c in daq.clients()), timeout=15)
    daq.procs.append(Proc(old.args, old.log).start())
    return dead


def _rows(daq: Daq, path: Path) -> np.ndarray:
    from larpixdaq.formats.pacman import decode_data_messages
    from larpixdaq.formats.rawfile import open_raw

    with open_raw(path) as f:
        msgs, _ = f.read()
    return decode_data_messages(msgs, 1).rows


def _producer_counters(daq: Daq) -> dict:
    return next((c.get("counters", {}) for c in daq.clients() if c["name"] == "producer-1"),
                {})


def test_a_killed_producer_s_successor_sends_what_it_had_not_got_committed(tmp_path):
    """Storage is stopped (SIGSTOP), so the producer holds frames nobody has committed when
    it is SIGKILLed; its successor sends them again from the frame log, ends the dead
    stream, and records the hole. Every packet the dead one recorded is in the files once,
    then the successor's."""
    daq = Daq(tmp_path, boards=1, rate=RATE)
    try:
        daq.start_run(rejoin_grace=60)
        run_number = _run_number(daq)
        wait_for(lambda: _packets_sent(daq) > 50_000, timeout=20)
        daq.storage.send(signal.SIGSTOP)
        try:
            wait_for(lambda: _producer_counters(daq).get("frames_held", 0) >= 20, timeout=20)
            held = _producer_counters(daq)["frames_held"]
            dead = _kill_and_restart(daq, run_number)
        finally:
            daq.storage.send(signal.SIGCONT)
        wait_for(lambda: _producer_counters(daq).get("packets_sent", 0) > 20_000, timeout=30)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        mine = run["counters"]["producer-1"]
        # At least what was held at the last heartbeat before the kill was sent again.
        assert mine["frames_recovered"] >= held, (mine["frames_recovered"], held)
        assert mine["packets_recovered"] > 0
        assert run["counters"]["storage"]["streams_unfinished"] == 0
        gaps = [i for i, t in enumerate(run["incidents"]) if "data gap" in t]
        assert len(gaps) == 1, run["incidents"]
        text = run["incidents"][gaps[0]]
        assert "producer-1" in text and "io_group 1 " in text and "SYNC" in text
        assert gaps[0] in run["resolved_incidents"]
        losses = run_losses(run["counters"], run["roles"])
        assert losses == {"producer-1.run_data_gaps": 1}, losses
        assert run["exit_status"] == "degraded"
        # The hole is a row of the run file, before the successor's data, and the dead
        # stream's end is there too.
        texts = read_run_messages(run["files"])
        (row,) = (t for t in texts if t.startswith("gap "))
        t0, t1 = (int(x) for x in row.split()[1].split("-"))
        assert t0 <= t1 and f"from message time {t0} to {t1}" in text
        assert framelog.TAKEOVER_TEXT.decode() in texts
        # Every packet the killed producer recorded is in the files once, in order; then at
        # most what it logged and had not yet recorded when it died (one read of the board:
        # it records right after logging); then the successor's.
        rows = read_run_packets(run["files"])
        got = rows[(rows["io_group"] == 1) & (rows["packet_type"] != MESSAGE)]
        before, after = _rows(daq, dead), _rows(daq, daq.tmp / f"sent-1-{run_number}-2.raw")
        assert len(before) > 50_000
        assert np.array_equal(got[:len(before)], before)
        assert np.array_equal(got[len(got) - len(after):], after)
        assert 0 <= len(got) - len(before) - len(after) <= ONE_READ
    finally:
        daq.close()


def test_a_spill_file_left_by_a_killed_producer_is_kept_and_reported(tmp_path):
    daq = Daq(tmp_path, boards=1, rate=100_000, producer_args=("--hold-mb", "0.2"))
    try:
        daq.start_run(rejoin_grace=30)
        wait_for(lambda: _packets_sent(daq) > 10_000, timeout=20)
        daq.aggregator.send(signal.SIGSTOP)  # the producer holds, then spills
        try:
            spill = daq.data / f"spill-producer-1-{_producer(daq).proc.pid}.bin"
            wait_for(lambda: spill.exists() and spill.stat().st_size > 1 << 20, timeout=20)
            run_number = _run_number(daq)
            _kill_and_restart(daq, run_number)
        finally:
            daq.aggregator.send(signal.SIGCONT)
        wait_for(lambda: _packets_sent(daq) > 10_000, timeout=20)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        orphan = [t for t in run["incidents"] if "spill file(s) of a dead producer-1" in t]
        assert len(orphan) == 1 and spill.name in orphan[0], run["incidents"]
        assert spill.exists() and spill.stat().st_size > 1 << 20  # kept as it was
        assert run["counters"]["producer-1"]["spill_files_orphaned"] == 1
        # Its frames (and those held in memory) went again from the frame log.
        assert run["counters"]["producer-1"]["frames_recovered"] > 0
        assert run["counters"]["storage"]["streams_unfinished"] == 0
    finally:
        daq.close()


def test_with_a_pacman_every_packet_outside_the_recorded_gap_is_in_the_files_once(tmp_path):
    """The board (the PACMAN emulator) runs on while its producer is dead; a subscriber of
    its PUB records what it published (the truth). The files hold the truth's messages in
    two unbroken stretches, and every message between them is inside the recorded gap."""
    import threading

    import zmq

    from larpixdaq.boards.pacman_emulator import PacmanEmulator
    from larpixdaq.boards.simboard import SimulatedBoard
    from larpixdaq.formats.pacman import HEADER, decode_data_messages

    emu = PacmanEmulator(SimulatedBoard(1, seed=2).bring_up_all(), cmd_port=0, data_port=0,
                         echo_port=0).start()
    ports = {k: int(v.rsplit(":", 1)[1]) for k, v in emu.endpoints().items()}
    truth: list[bytes] = []
    stop = threading.Event()
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{ports['data']}")

    def record() -> None:
        while not stop.is_set():
            if sub.poll(50):
                truth.append(sub.recv())

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    wait_for(lambda: len(truth) > 0, timeout=20)
    daq = Daq(tmp_path, boards=1, producer_args=(
        "--board", f"pacman:127.0.0.1:{ports['cmd']}:{ports['data']}"))
    try:
        daq.start_run(rejoin_grace=30)
        run_number = _run_number(daq)
        wait_for(lambda: _packets_sent(daq) > 2000, timeout=20)
        _kill_and_restart(daq, run_number)
        wait_for(lambda: _packets_sent(daq) > 2000, timeout=20)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
    finally:
        daq.close()
        stop.set()
        recorder.join(5)
        sub.close(0)
        emu.stop()
    (text,) = (t for t in run["incidents"] if "data gap" in t)
    t0, t1 = (int(x) for x in text.split("from message time ")[1].split(" (")[0].split(" to "))
    msgs = [m for m in truth if m[:1] == b"D"]
    each = [decode_data_messages([m], 1).rows for m in msgs]  # the test's own bookkeeping
    each = [r[r["packet_type"] != MESSAGE] for r in each]
    rows = np.concatenate(each)
    of_message = np.repeat(np.arange(len(msgs)), [len(r) for r in each])
    times = np.array([HEADER.unpack_from(m)[1] for m in msgs])
    got = read_run_packets(run["files"])
    got = got[(got["io_group"] == 1) & (got["packet_type"] != MESSAGE)]

    def stretch(start: int) -> tuple[int, int]:
        """Where got[start] is in the truth (of the places its row is, the one where the two
        go on together longest), and how far they go on together."""
        best = (-1, 0)
        for at in np.flatnonzero(rows == got[start]):
            n = min(len(got) - start, len(rows) - at)
            differ = np.flatnonzero(got[start:start + n] != rows[at:at + n])
            run = int(differ[0]) if len(differ) else n
            if run > best[1]:
                best = (int(at), run)
        assert best[0] >= 0, "a row of the files the board never published"
        return best

    a, n1 = stretch(0)
    assert n1 < len(got), "no hole at all: the producer's death lost nothing?"
    c, n2 = stretch(n1)
    assert n1 + n2 == len(got), "more than one hole"
    assert c >= a + n1  # in order, nothing twice
    hole = np.unique(of_message[a + n1:c])
    assert len(hole) > 0
    print(f"gap {t0}..{t1}: {len(hole)} of {len(msgs)} messages ({c - a - n1} packets) in the "
          f"hole, {n1} + {n2} packets in the files")
    assert (times[hole] >= t0).all() and (times[hole] <= t1).all(), (t0, t1, times[hole])
    # The stretches are whole messages: the hole starts and ends at message boundaries.
    assert of_message[a + n1 - 1] != of_message[a + n1] and of_message[c - 1] != of_message[c]
