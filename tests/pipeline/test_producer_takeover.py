"""A producer SIGKILLed mid-run, with a PACMAN emulator that runs on and a subscriber of its
PUB recording the truth (with when each message arrived): the successor reads its board from
its own start, not from when run control brings it back into the run, so the recorded hole
ends before the catch-up; everything outside the hole is in the files once, in order. A
fresh producer still sends nothing its board published before the run's begin, and what a
successor read for a run that ended meanwhile goes into no run and is counted.

The core is SIGKILLed while the producer is restarted and started again only once the board
has published about a second more: the catch-up can come only then, so a hole that ends
before it shows that the board was read before run control brought the successor back."""

from __future__ import annotations

import signal
import time

import numpy as np
from bench.boardtruth import BoardTruth
from daq_procs import Daq, Proc

from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.gapcheck import check_against_truth, messages_in_files
from larpixdaq.pipeline.gapmark import gap_interval
from larpixdaq.pipeline.runfile import read_run_packets
from larpixdaq.runcontrol.testing import wait_for

RATE = 20_000
WORDS = 200  # per message: the board publishes 100 messages a second
MORE = 100
"""Messages the board publishes (about a second) after the successor started, before the
core is started again (or a new run prepared)."""


def _producer(daq: Daq) -> Proc:
    (p,) = (p for p in daq.procs if p.args[0] == "producer" and p.proc is not None)
    return p


def _counters(daq: Daq) -> dict:
    try:
        clients = daq.clients()
    except Exception:  # the core is being started again
        return {}
    return next((c.get("counters", {}) for c in clients if c["name"] == "producer-1"), {})


def _start_again(daq: Daq, old: Proc, truth: BoardTruth) -> None:
    """Start the killed producer ``old`` again (returns once it has said its first line: its
    board and frame log are open), then wait while the board publishes :data:`MORE`."""
    daq.procs.append(Proc(old.args, old.log).start())
    published = len(truth.messages)
    wait_for(lambda: len(truth.messages) >= published + MORE, timeout=60)


def _end(daq: Daq) -> dict:
    deadline = time.monotonic() + 60
    while True:
        final = daq.op.call("end_run")
        if final.success or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the core may still be taking its members back
    assert final.success, final.message
    return daq.runs_json()[0]


def _sent_everything(daq: Daq, truth: BoardTruth) -> None:
    """Once the board is held: wait until the producer has sent a tail of what it published
    (a restarted producer sends from where it began reading), the same count twice."""
    words = truth.stretch(0).words
    tails = set(np.cumsum(words[::-1]).tolist())
    seen: list[int] = []

    def done() -> bool:
        seen.append(_counters(daq).get("packets_sent", -1))
        return len(seen) > 1 and seen[-1] == seen[-2] and seen[-1] in tails

    wait_for(done, timeout=60, interval=0.3)


def _end_once_sent(daq: Daq, truth: BoardTruth, timeout: float = 30) -> dict:
    """Let the producer send some data, hold the board, wait until the producer has sent
    all of it, end the run: its record."""
    wait_for(lambda: _counters(daq).get("packets_sent", 0) > 5 * WORDS, timeout=timeout)
    truth.hold()
    _sent_everything(daq, truth)
    return _end(daq)


def _assert_only_what_followed_the_begin(run: dict, truth: BoardTruth, t_begin: float) -> None:
    """The run's files hold an unbroken tail of what the board published, all of it
    published after the begin."""
    s = truth.stretch(0)
    present, used = messages_in_files(s.rows, s.of_message, len(s.times), _files(run))
    assert used == len(_files(run)) and present.any()
    first = int(np.flatnonzero(present)[0])
    assert present[first:].all()
    assert s.arrived[first] > t_begin, (s.arrived[first] - t_begin)


def _files(run: dict) -> np.ndarray:
    rows = read_run_packets(run["files"])
    return rows[(rows["io_group"] == 1) & (rows["packet_type"] != MESSAGE)]


def test_a_successor_reads_its_board_before_the_catch_up_so_the_hole_ends_before_it(tmp_path):
    truth = BoardTruth(1, RATE, seed=3, message_words=WORDS).start()
    daq = Daq(tmp_path, boards=1, producer_args=("--board", truth.board))
    try:
        daq.start_run(rejoin_grace=60)
        truth.resume()
        wait_for(lambda: _counters(daq).get("packets_sent", 0) > 5 * WORDS, timeout=30)
        daq.core.kill()  # no catch-up can come before it is back
        old = _producer(daq)
        old.stop(signal.SIGKILL)
        _start_again(daq, old, truth)
        t_core = time.time()
        daq.core.start()
        run = _end_once_sent(daq, truth, timeout=60)
    finally:
        daq.close()
        truth.stop()
    s = truth.stretch(0)
    got = _files(run)
    gaps = [g[1:] for g in map(gap_interval, run["incidents"]) if g is not None]
    v = check_against_truth(s.rows, s.of_message, s.times, got, gaps, kills=1)
    # (a) every message outside the recorded hole is in the files, once, in order.
    assert v.ok, v
    assert v.gaps == 1 and v.missing > 0 and v.rows_lost == 0
    present, _ = messages_in_files(s.rows, s.of_message, len(s.times), got)
    missing = np.flatnonzero(~present)
    after = int(missing[-1]) + 1  # the first message the successor put into the run
    assert np.all(np.diff(missing) == 1), "one hole"
    assert present[after:].all()
    # (b) it was read before the core was even back (no catch-up could come earlier): the
    # hole is the process's start, not its registration and catch-up.
    print(f"hole: {len(missing)} messages, {s.arrived[after] - s.arrived[missing[0]]:.3f} s; "
          f"the core came back {t_core - s.arrived[after]:.3f} s after its end")
    assert s.arrived[after] < t_core
    mine = run["counters"]["producer-1"]
    assert mine["messages_read_early"] >= MORE // 2
    assert mine["early_messages_outside_run"] == 0 == mine["early_messages_over_budget"]
    assert mine["run_data_gaps"] == 1 and mine["frames_recovered"] > 0
    assert run["counters"]["storage"]["streams_unfinished"] == 0


def test_a_fresh_producer_sends_nothing_its_board_published_before_the_begin(tmp_path):
    truth = BoardTruth(1, RATE, seed=4, message_words=WORDS).start()
    truth.resume()
    daq = Daq(tmp_path, boards=1, producer_args=("--board", truth.board)).start()
    try:
        daq.call("prepare_run")
        # The board publishes all along while the run is only prepared.
        published = len(truth.messages)
        wait_for(lambda: len(truth.messages) >= published + MORE, timeout=60)
        t_begin = time.time()
        daq.call("begin_run")
        run = _end_once_sent(daq, truth)
    finally:
        daq.close()
        truth.stop()
    _assert_only_what_followed_the_begin(run, truth, t_begin)
    mine = run["counters"]["producer-1"]
    assert mine["messages_read_early"] == 0 and mine["run_messages_before_begin"] == 0


def test_what_a_successor_read_for_a_run_that_ended_meanwhile_goes_into_no_run(tmp_path):
    """Run 1's producer is killed and the run fails without it (the grace runs out) and is
    reset; the successor starts with run 1's unfinished stream in its log and reads its
    board; run 2 is then prepared and begun: what was read for run 1 is dropped and counted,
    and run 2 holds only what the board published after its begin."""
    truth = BoardTruth(1, RATE, seed=5, message_words=WORDS).start()
    truth.resume()
    daq = Daq(tmp_path, boards=1, producer_args=("--board", truth.board))
    try:
        daq.start_run(rejoin_grace=1)
        wait_for(lambda: _counters(daq).get("packets_sent", 0) > 5 * WORDS, timeout=30)
        old = _producer(daq)
        old.stop(signal.SIGKILL)
        wait_for(lambda: not _counters(daq), timeout=30)
        final = daq.op.call("end_run")  # fails once the grace is over: ERROR
        assert not final.success and "did not register again" in final.message, final.message
        daq.call("reset")
        _start_again(daq, old, truth)
        wait_for(lambda: _counters(daq), timeout=30)  # registered: in the next run
        daq.call("prepare_run")
        t_begin = time.time()
        daq.call("begin_run")
        run = _end_once_sent(daq, truth)
    finally:
        daq.close()
        truth.stop()
    assert run["run_number"] == 2
    mine = run["counters"]["producer-1"]
    assert mine["early_messages_outside_run"] >= MORE // 2, mine
    assert mine["messages_read_early"] == 0 and mine["run_data_gaps"] == 0
    assert mine["frames_recovered"] == 0  # run 1's frames are not run 2's
    _assert_only_what_followed_the_begin(run, truth, t_begin)

