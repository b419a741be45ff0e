"""What a restarted producer does with what it reads of its board before run control brings
it into the run: which run it takes over (DeadStreams), and what the messages read early
become (EarlyHold), as properties; then a producer in this process with a board that runs
on its own, taking over a dead predecessor's log through a real aggregator and storage."""

from __future__ import annotations

import threading

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_producer_recovery import DEAD_PID, _dead_log, _messages, _rows, _words

from larpixdaq.boards.session import BoardSession
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline import framelog
from larpixdaq.pipeline.aggregator import Aggregator
from larpixdaq.pipeline.earlyread import (
    KEEP,
    OTHER_RUN,
    OVER,
    DeadStreams,
    EarlyHold,
)
from larpixdaq.pipeline.producer import Producer
from larpixdaq.pipeline.runfile import read_run_messages, read_run_packets
from larpixdaq.pipeline.sources import Source
from larpixdaq.pipeline.storage import StorageLink
from larpixdaq.runcontrol.testing import wait_for

# -- which run a dead log leaves unfinished --------------------------------------------------

frame = st.tuples(st.integers(0, 3), st.integers(1, 3), st.booleans(), st.booleans())
"""(epoch, run, data, last) of a logged frame; each epoch keeps one run below."""


@given(st.lists(frame, max_size=30))
def test_the_run_taken_over_is_that_of_the_last_data_if_its_stream_is_unfinished(frames):
    frames = [(e, 10 + e, d, last) for e, _, d, last in frames]  # an epoch is one run's
    streams = DeadStreams()
    for f in frames:
        streams.see(*f)
    data = [f for f in frames if f[2]]
    if not data:
        expected = None
    else:
        epoch = data[-1][0]
        ended = any(f[0] == epoch and f[3] for f in frames)
        expected = None if ended else 10 + epoch
    assert streams.unfinished_run() == expected


def test_a_log_whose_last_stream_ended_is_no_takeover():
    streams = DeadStreams()
    streams.see(1, 4, True, False)  # run 4's data, then its end ...
    streams.see(1, 4, False, True)
    assert streams.unfinished_run() is None
    streams.see(2, 5, False, False)  # ... then run 5 begun, no data yet
    assert streams.unfinished_run() is None
    streams.see(2, 5, True, False)
    assert streams.unfinished_run() == 5


# -- what the messages read early become -----------------------------------------------------

step = st.one_of(
    st.tuples(st.just("read"), st.lists(st.binary(min_size=1, max_size=40), max_size=4),
              st.integers(0, 60)),
    st.tuples(st.just("prepare"), st.sampled_from([7, 8])),
    st.tuples(st.just("begin")),
    st.tuples(st.just("discard")),
)


@given(limit=st.integers(0, 300), steps=st.lists(step, max_size=25))
def test_every_message_read_early_ends_in_the_run_or_counted_never_both(limit, steps):
    hold = EarlyHold(run=7, limit=limit)
    offered: list[bytes] = []
    released: list[bytes] = []
    refused = False
    kept = []
    for s in steps:
        if s[0] == "read":
            _, msgs, in_use = s
            was_reading = hold.reading
            ok = hold.take(msgs, in_use)
            offered += msgs
            if ok:  # within the budget, counting what the producer holds besides
                assert was_reading and not refused and hold.nbytes + in_use <= limit
            else:
                refused = True
                assert not hold.reading and hold.messages == [] and hold.nbytes == 0
        elif s[0] == "prepare":
            reading = hold.reading
            verdict = hold.at_prepare(s[1])
            assert verdict == (OVER if not reading else KEEP if s[1] == 7 and not kept
                               else OTHER_RUN)
            if verdict == KEEP:
                kept.append(s[1])
            if verdict == OTHER_RUN:
                assert hold.messages == [] and not hold.reading
        elif s[0] == "begin":
            if hold.reading:
                released += hold.release()
        else:
            hold.discard()
        assert hold.nbytes == sum(map(len, hold.messages)) <= limit
    # Each message is released, still held, or counted dropped: exactly once.
    assert len(released) + len(hold.messages) + hold.outside_run + hold.over_budget \
        == len(offered)
    # What goes into the run is what was read, in order, from the first read on: a prefix.
    assert released + hold.messages == offered[:len(released) + len(hold.messages)]
    if released:  # only for the dead stream's run, prepared while reading, within budget
        assert kept == [7] and hold.over_budget == 0


def test_another_run_prepared_drops_what_was_read_and_counts_it():
    hold = EarlyHold(run=7, limit=1000)
    assert hold.take([b"a", b"bc"])
    assert hold.at_prepare(8) == OTHER_RUN
    assert hold.outside_run == 2 and not hold.reading and hold.messages == []
    assert not hold.take([b"d"])  # what the source still gave as it was stopped
    assert hold.outside_run == 3 and hold.over_budget == 0


def test_beyond_the_budget_everything_held_is_dropped_and_reading_stops():
    hold = EarlyHold(run=7, limit=10)
    assert hold.take([b"12345"], in_use=0)
    assert not hold.take([b"123"], in_use=3)  # 5 + 3 + 3 > 10
    assert hold.over_budget == 2 and not hold.reading
    assert not hold.take([b"x"])
    assert hold.over_budget == 3
    assert hold.at_prepare(7) == OVER


def test_the_same_run_keeps_reading_until_begin_then_releases_in_order():
    hold = EarlyHold(run=7, limit=1000)
    hold.take([b"a"])
    assert hold.at_prepare(7) == KEEP and hold.reading
    hold.take([b"b", b"c"])
    assert hold.release() == [b"a", b"b", b"c"]
    assert not hold.reading and hold.outside_run == 0 and hold.over_budget == 0


def test_ended_before_its_begin_here_what_was_read_is_no_run_s():
    hold = EarlyHold(run=7, limit=1000)
    hold.take([b"a", b"b"])
    hold.at_prepare(7)
    assert hold.discard() == 2 and hold.outside_run == 2


# -- a producer taking over, in this process ---------------------------------------------------


class Board(Source):
    """A board that runs on its own: each read gives the next of ``msgs`` (then nothing);
    what each call saw is recorded, so a test can tell when it was read."""

    runs_on_its_own = True

    def __init__(self, msgs: list[bytes]) -> None:
        self.io_group = 1
        self.lock = threading.RLock()
        self.msgs = list(msgs)
        self.at = 0
        self.calls: list[str] = []
        self.started = False

    def prepare(self) -> None:
        self.calls.append("prepare")

    def start(self) -> None:
        self.calls.append("start")
        self.started = True

    def stop(self) -> None:
        self.calls.append("stop")
        self.started = False

    def read(self, wait: float) -> list[bytes]:
        if not self.started:
            return []
        if self.at >= len(self.msgs):
            threading.Event().wait(min(wait, 0.01))
            return []
        self.at += 1
        return [self.msgs[self.at - 1]]

    def session(self) -> BoardSession:
        return BoardSession(None, 1, kind="replay")


def _path(tmp_path):
    data = tmp_path / "data"
    agg = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None).start()
    store = StorageLink(agg.outlet, data, commit_interval=0.05).start()
    return data, agg, store


def _finish(p: Producer, store: StorageLink) -> dict:
    p.end()
    summary = store.end()
    wait_for(lambda: not p.unacked, timeout=20)
    return summary


def test_taking_over_the_same_run_the_board_is_read_from_the_start_and_that_goes_first(
        tmp_path):
    data, agg, store = _path(tmp_path)
    dead = _messages(1, 5, 1_700_000_000)
    _dead_log(data, run=5, epoch=40, msgs=dead)
    mine = _messages(2, 12, 1_700_000_100)
    board = Board(mine)
    p = Producer("p", board, agg.inlet, state_dir=data).start()
    try:
        # Read before any run control: no prepare, no begin yet.
        wait_for(lambda: board.at >= 4, timeout=20)
        store.prepare(5, {"run_type": "test"})
        p.prepare(5)
        assert p.flowing and not p.reading
        p.begin()
        wait_for(lambda: p.counters.packets_sent >= sum(map(_words, mine)), timeout=20)
        summary = _finish(p, store)
    finally:
        p.stop()
        store.stop()
        agg.stop()
    # Prepared and started once (early), never again at the catch-up.
    assert board.calls == ["prepare", "start", "stop"]
    assert p.counters.messages_read_early >= 4
    assert p.counters.early_messages_outside_run == 0 == p.counters.early_messages_over_budget
    got = read_run_packets(summary["files"])
    got = got[got["packet_type"] != MESSAGE]
    assert np.array_equal(got, np.concatenate([_rows(dead), _rows(mine)]))
    texts = read_run_messages(summary["files"])
    begin = [i for i, t in enumerate(texts) if t == "Beginning run"]
    take = texts.index(framelog.TAKEOVER_TEXT.decode())
    gap = next(i for i, t in enumerate(texts) if t.startswith("gap "))
    assert len(begin) == 2 and begin[0] < take and begin[1] < gap
    # The hole ends at the first message read early, the board's message 1_700_000_100.
    assert texts[gap].startswith("gap 1700000004-1700000100 "), texts[gap]
    assert not list(data.glob(f"framelog-p-{DEAD_PID}-*"))


def test_taking_over_when_another_run_is_prepared_what_was_read_early_is_dropped(tmp_path):
    data, agg, store = _path(tmp_path)
    _dead_log(data, run=5, epoch=40, msgs=_messages(1, 3, 1_700_000_000))
    mine = _messages(2, 10, 1_700_000_100)
    board = Board(mine)
    p = Producer("p", board, agg.inlet, state_dir=data).start()
    try:
        wait_for(lambda: board.at >= 4, timeout=20)
        store.prepare(6, {"run_type": "test"})
        p.prepare(6)  # run 5 is over: its frames are stale, what was read early no run's
        early = board.at
        p.begin()
        wait_for(lambda: board.at == len(mine), timeout=20)
        wait_for(lambda: p.counters.packets_sent >= sum(map(_words, mine[early:])),
                 timeout=20)
        summary = _finish(p, store)
    finally:
        p.stop()
        store.stop()
        agg.stop()
    assert p.counters.early_messages_outside_run == early >= 4
    assert p.counters.messages_read_early == 0 and p.counters.data_gaps == 0
    assert p.counters.frames_stale > 0
    # Stopped (and what it had taken dropped) before it was prepared and started as a fresh
    # producer's source is; nothing read between.
    assert board.calls == ["prepare", "start", "stop", "prepare", "start", "stop"]
    got = read_run_packets(summary["files"])
    assert np.array_equal(got[got["packet_type"] != MESSAGE], _rows(mine[early:]))


def test_beyond_the_hold_budget_early_reading_stops_and_the_gap_runs_to_the_begin(tmp_path):
    data, agg, store = _path(tmp_path)
    _dead_log(data, run=5, epoch=40, msgs=_messages(1, 3, 1_700_000_000))
    mine = _messages(2, 10, 1_700_000_100)
    board = Board(mine)
    # Room for two messages read early, not three.
    p = Producer("p", board, agg.inlet, state_dir=data,
                 hold_bytes=sum(map(len, mine[:2])) + 10).start()
    try:
        wait_for(lambda: p.counters.early_messages_over_budget == 3, timeout=20)
        store.prepare(5, {"run_type": "test"})
        p.prepare(5)
        p.begin()
        wait_for(lambda: p.counters.packets_sent >= sum(map(_words, mine[3:])), timeout=20)
        summary = _finish(p, store)
    finally:
        p.stop()
        store.stop()
        agg.stop()
    assert p.counters.messages_read_early == 0 and p.counters.early_messages_outside_run == 0
    assert board.calls[:3] == ["prepare", "start", "stop"]
    assert board.calls[3:] == ["prepare", "start", "stop"]
    got = read_run_packets(summary["files"])
    got = got[(got["packet_type"] != MESSAGE)]
    texts = read_run_messages(summary["files"])
    gap = next(t for t in texts if t.startswith("gap "))
    assert gap.startswith("gap 1700000002-1700000103 "), gap  # to the first after begin
    assert np.array_equal(got[-len(_rows(mine[3:])):], _rows(mine[3:]))


def test_a_fresh_producer_reads_nothing_before_its_run_begins(tmp_path):
    data, agg, store = _path(tmp_path)
    mine = _messages(2, 6, 1_700_000_100)
    board = Board(mine)
    p = Producer("p", board, agg.inlet, state_dir=data).start()
    try:
        store.prepare(5, {"run_type": "test"})
        p.prepare(5)
        # A turn of the data loop in READY: the board is neither started nor read.
        p.call(lambda: None)
        p.call(lambda: None)
        assert board.calls == ["prepare"] and board.at == 0
        p.begin()
        wait_for(lambda: p.counters.packets_sent >= sum(map(_words, mine)), timeout=20)
        _finish(p, store)
    finally:
        p.stop()
        store.stop()
        agg.stop()
    assert board.calls == ["prepare", "start", "stop"]
    assert p.counters.messages_read_early == 0


def test_a_board_that_waits_for_its_reader_is_not_read_early(tmp_path):
    data, agg, store = _path(tmp_path)
    _dead_log(data, run=5, epoch=40, msgs=_messages(1, 3, 1_700_000_000))
    board = Board(_messages(2, 3, 1_700_000_100))
    board.runs_on_its_own = False
    p = Producer("p", board, agg.inlet, state_dir=data).start()
    try:
        p.call(lambda: None)
        p.call(lambda: None)
        assert board.calls == [] and board.at == 0
        store.prepare(5, {"run_type": "test"})
        p.prepare(5)
        assert board.calls == ["prepare"]
    finally:
        p.stop()
        store.stop()
        agg.stop()
